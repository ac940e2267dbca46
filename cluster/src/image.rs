//! Images written here, so that the demo asks no registry for a base image: tar layers
//! ([`ustar_header`], shared with the tests' in-memory layers) and an OCI image layout (the
//! directory `skopeo` reads as `oci:<dir>:<tag>`) of a two-layer image of random bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use shoal_core::Digest;
use shoal_core::digest::{Algorithm, Hasher};

use crate::error::{LaunchError, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A tar entry's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// The 512-byte ustar header of an entry owned by root, or `None` if `path` is too long
/// for ustar (100 bytes).
pub fn ustar_header(path: &str, mode: u32, kind: Kind, len: u64, mtime: u64) -> Option<[u8; 512]> {
    let name = match kind {
        Kind::Dir => format!("{}/", path.trim_end_matches('/')),
        Kind::File => path.to_owned(),
    };
    if name.len() >= 100 {
        return None;
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{:0width$o}\0", v, width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], if kind == Kind::Dir { 0 } else { len });
    octal(&mut h[136..148], mtime);
    h[148..156].copy_from_slice(b"        ");
    h[156] = match kind {
        Kind::File => b'0',
        Kind::Dir => b'5',
    };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Some(h)
}

/// Bytes of zeros that pad `len` to a whole number of 512-byte blocks.
pub fn tar_padding(len: u64) -> usize {
    ((512 - len % 512) % 512) as usize
}

/// A blob of the layout: what a manifest's descriptor says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
}

impl Blob {
    pub fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": self.digest.to_string(), "size": self.size})
    }
}

/// The demo image, as an OCI layout.
#[derive(Debug, Clone)]
pub struct DemoImage {
    pub layout: PathBuf,
    pub tag: String,
    /// The config and the layers, in the order a push sends them.
    pub blobs: Vec<Blob>,
    pub manifest: Blob,
    /// The layers' and the config's bytes together (what every pull moves besides the
    /// manifest).
    pub bytes: u64,
}

impl DemoImage {
    /// Where a blob of the layout is stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.layout, digest)
    }
}

fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout.join("blobs/sha256").join(digest.hex())
}

/// Writes a blob's bytes into the layout and returns it.
fn put(layout: &Path, bytes: &[u8]) -> Result<Blob> {
    let digest = Digest::sha256_of(bytes);
    let path = blob_path(layout, &digest);
    std::fs::write(&path, bytes).map_err(LaunchError::io("cannot write", &path))?;
    Ok(Blob {
        digest,
        size: bytes.len() as u64,
    })
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// A tar layer written to a file as it is made, hashed on the way.
struct LayerWriter {
    out: BufWriter<File>,
    hasher: Hasher,
    len: u64,
    path: PathBuf,
}

impl LayerWriter {
    fn create(path: PathBuf) -> Result<LayerWriter> {
        let f = File::create(&path).map_err(LaunchError::io("cannot create", &path))?;
        Ok(LayerWriter {
            out: BufWriter::with_capacity(1 << 20, f),
            hasher: Hasher::new(Algorithm::Sha256),
            len: 0,
            path,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(LaunchError::io("cannot write", &self.path))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn entry_header(&mut self, path: &str, kind: Kind, len: u64) -> Result<()> {
        let mode = if kind == Kind::Dir { 0o755 } else { 0o644 };
        let h = ustar_header(path, mode, kind, len, 0)
            .ok_or_else(|| LaunchError::Check(format!("tar name too long: {path}")))?;
        self.write(&h)
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        self.entry_header(path, Kind::Dir, 0)
    }

    fn file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.entry_header(path, Kind::File, data.len() as u64)?;
        self.write(data)?;
        self.write(&vec![0; tar_padding(data.len() as u64)])
    }

    /// A file of `len` random bytes, made a MiB at a time.
    fn random_file(&mut self, path: &str, len: u64) -> Result<()> {
        self.entry_header(path, Kind::File, len)?;
        let rng = SystemRandom::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            rng.fill(&mut buf[..n])
                .map_err(|_| LaunchError::Check("the system's random generator failed".into()))?;
            let chunk = &buf[..n];
            self.write(chunk)?;
            left -= n as u64;
        }
        self.write(&vec![0; tar_padding(len)])
    }

    /// Ends the archive and moves it into the layout under its digest.
    fn finish(mut self, layout: &Path) -> Result<Blob> {
        self.write(&[0; 1024])?;
        self.out
            .flush()
            .map_err(LaunchError::io("cannot write", &self.path))?;
        let digest = self.hasher.finalize();
        let to = blob_path(layout, &digest);
        std::fs::rename(&self.path, &to).map_err(LaunchError::io("cannot move", &self.path))?;
        Ok(Blob {
            digest,
            size: self.len,
        })
    }
}

/// Writes a two-layer image of `mib` MiB of random data (three quarters in the first
/// layer) as an OCI layout in `layout`, tagged `tag`.
pub fn write_demo_image(layout: &Path, mib: u64, tag: &str) -> Result<DemoImage> {
    let blobs_dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir).map_err(LaunchError::io("cannot create", &blobs_dir))?;
    let big = (mib * 3 / 4).max(1);
    let small = mib.saturating_sub(big).max(1);

    let mut l1 = LayerWriter::create(layout.join("layer1.tar"))?;
    l1.dir("etc")?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    l1.file(
        "etc/shoal-demo",
        format!("Delivered by Shoal, {stamp}\n").as_bytes(),
    )?;
    l1.dir("data")?;
    l1.random_file("data/part-1", big << 20)?;
    let l1 = l1.finish(layout)?;
    let mut l2 = LayerWriter::create(layout.join("layer2.tar"))?;
    l2.dir("data")?;
    l2.random_file("data/part-2", small << 20)?;
    let l2 = l2.finish(layout)?;

    let config = put(
        layout,
        &json_bytes(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [l1.digest.to_string(), l2.digest.to_string()]},
            "history": [
                {"created_by": "devcluster demo: layer 1"},
                {"created_by": "devcluster demo: layer 2"}
            ],
        })),
    )?;
    let manifest = put(
        layout,
        &json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [l1.descriptor(OCI_LAYER), l2.descriptor(OCI_LAYER)],
        })),
    )?;
    let mut entry = manifest.descriptor(OCI_MANIFEST);
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]});
    for (file, bytes) in [
        ("index.json", json_bytes(&index)),
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ] {
        let p = layout.join(file);
        std::fs::write(&p, bytes).map_err(LaunchError::io("cannot write", &p))?;
    }
    Ok(DemoImage {
        layout: layout.to_owned(),
        tag: tag.to_owned(),
        bytes: l1.size + l2.size + config.size,
        blobs: vec![config, l1, l2],
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_image_is_a_layout_whose_blobs_are_their_digests() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let img = write_demo_image(tmp.path(), 2, "v1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.blobs.len(), 3);
        for b in img.blobs.iter().chain([&img.manifest]) {
            let bytes = std::fs::read(img.blob_path(&b.digest)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(Digest::sha256_of(&bytes), b.digest);
            assert_eq!(bytes.len() as u64, b.size);
        }
        // Two MiB of data, in whole tar blocks, plus headers, padding and the end blocks.
        let layers = img.blobs[1].size + img.blobs[2].size;
        assert!(
            layers > 2 << 20 && layers < (2 << 20) + 16 * 512,
            "{layers}"
        );
        assert_eq!(img.blobs[1].size % 512, 0);
        let index = std::fs::read_to_string(tmp.path().join("index.json")).unwrap_or_default();
        assert!(index.contains(&img.manifest.digest.to_string()) && index.contains("\"v1\""));
    }

    #[test]
    fn a_header_carries_its_checksum() {
        let h = ustar_header("data/x", 0o644, Kind::File, 5, 0).unwrap_or([0; 512]);
        let mut copy = h;
        copy[148..156].copy_from_slice(b"        ");
        let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(&h[148..154], format!("{sum:06o}").as_bytes());
        assert!(ustar_header(&"x".repeat(100), 0o644, Kind::File, 0, 0).is_none());
    }
}
