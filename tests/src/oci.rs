//! Images written by the tests themselves, so that no test pulls anything from a registry:
//! tar layers, and OCI image layouts (the directory format `skopeo`, `podman` and `ctr` read
//! as `oci:<dir>:<tag>`) holding images and multi-platform indexes.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use shoal_cluster::image::{Kind, tar_padding, ustar_header};
pub use shoal_cluster::image::{OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use shoal_core::Digest;

/// One entry of a tar archive.
pub enum Entry<'a> {
    Dir(&'a str),
    File {
        path: &'a str,
        mode: u32,
        data: &'a [u8],
    },
}

impl<'a> Entry<'a> {
    pub fn file(path: &'a str, data: &'a [u8]) -> Self {
        Entry::File {
            path,
            mode: 0o644,
            data,
        }
    }

    pub fn executable(path: &'a str, data: &'a [u8]) -> Self {
        Entry::File {
            path,
            mode: 0o755,
            data,
        }
    }
}

/// A ustar archive of `entries`, owned by root, as image layers are.
pub fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let (path, mode, kind, data): (&str, u32, Kind, &[u8]) = match e {
            Entry::Dir(p) => (p, 0o755, Kind::Dir, &[]),
            Entry::File { path, mode, data } => (path, *mode, Kind::File, data),
        };
        let header = ustar_header(path, mode, kind, data.len() as u64, 1_700_000_000)
            .unwrap_or_else(|| panic!("tar name too long for ustar: {path}"));
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len() + tar_padding(data.len() as u64), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A descriptor of `bytes` as `media_type`.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::sha256_of(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// An OCI image layout directory.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        write(&dir.join("blobs/sha256/.keep"), b"");
        write(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        let _ = std::fs::remove_file(dir.join("blobs/sha256/.keep"));
        let layout = Layout {
            dir: dir.to_owned(),
            refs: Vec::new(),
        };
        layout.write_index();
        layout
    }

    /// Opens a layout another program wrote.
    pub fn open(dir: &Path) -> Self {
        Layout {
            dir: dir.to_owned(),
            refs: Vec::new(),
        }
    }

    /// Stores a blob and returns its digest.
    pub fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        write(&self.dir.join("blobs/sha256").join(d.hex()), bytes);
        d
    }

    /// Every blob in the layout, by digest, with its content's own digest beside it.
    pub fn blobs(&self) -> Vec<(String, Digest)> {
        let dir = self.dir.join("blobs/sha256");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let mut all: Vec<(String, Digest)> = entries
            .map(|e| {
                let e = e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
                let bytes = std::fs::read(e.path())
                    .unwrap_or_else(|err| panic!("cannot read {}: {err}", e.path().display()));
                (
                    format!("sha256:{}", e.file_name().to_string_lossy()),
                    Digest::sha256_of(&bytes),
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// An image of `layers` (uncompressed tars) for one platform, running `cmd`; returns
    /// the manifest's bytes.
    pub fn image(&self, arch: &str, cmd: &[&str], layers: &[Vec<u8>]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| Digest::sha256_of(l).to_string())
            .collect();
        let config = to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }));
        self.blob(&config);
        for l in layers {
            self.blob(l);
        }
        let manifest = to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config),
            "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
        }));
        self.blob(&manifest);
        manifest
    }

    /// An index over image manifests, each with its platform's architecture.
    pub fn index(&self, manifests: &[(&str, &[u8])]) -> Vec<u8> {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(arch, m)| {
                let mut d = descriptor(OCI_MANIFEST, m);
                d["platform"] = json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        let index = to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        }));
        self.blob(&index);
        index
    }

    /// Names `manifest` (of `media_type`) as `tag` in `index.json`.
    pub fn tag(&mut self, tag: &str, media_type: &str, manifest: &[u8]) {
        let mut d = descriptor(media_type, manifest);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(d);
        self.write_index();
    }

    fn write_index(&self) {
        let index = to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": self.refs,
        }));
        write(&self.dir.join("index.json"), &index);
    }
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|e| panic!("cannot encode JSON: {e}"))
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_entries_are_aligned_and_end_with_two_zero_blocks() {
        let t = tar(&[Entry::Dir("data"), Entry::file("data/x", b"hello")]);
        assert_eq!(t.len(), 512 + 512 + 512 + 1024);
        assert_eq!(&t[..5], b"data/");
        assert_eq!(t[156], b'5');
        assert_eq!(&t[1024..1029], b"hello");
    }

    #[test]
    fn a_layout_lists_what_it_holds() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut l = Layout::new(dir.path());
        let m = l.image("amd64", &["/x"], &[tar(&[Entry::file("x", b"x")])]);
        l.tag("v1", OCI_MANIFEST, &m);
        let blobs = l.blobs();
        assert_eq!(blobs.len(), 3);
        assert!(blobs.iter().all(|(name, d)| *name == d.to_string()));
    }
}
