//! OCI image layouts written by the tests themselves: tar layers, configs, image manifests
//! and indexes, in the directory format skopeo and podman read with `oci:<dir>:<tag>`.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test support: a failure is a failed test

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use shoal_core::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A tar archive of regular files (ustar), the way image layers are.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], v: u64| {
            let s = format!("{:0width$o}\0", v, width = field.len() - 1);
            field.copy_from_slice(s.as_bytes());
        };
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A descriptor of `bytes` as `media_type`.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": Digest::sha256_of(bytes),
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
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Layout {
            dir: dir.to_owned(),
            refs: Vec::new(),
        };
        layout.write_index();
        layout
    }

    /// Stores a blob and returns its digest.
    pub fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        d
    }

    pub fn read_blob(&self, d: &Digest) -> Vec<u8> {
        std::fs::read(self.dir.join("blobs/sha256").join(d.hex())).unwrap()
    }

    /// Every blob in the layout, by digest.
    pub fn blobs(&self) -> Vec<(Digest, Vec<u8>)> {
        let mut all: Vec<(Digest, Vec<u8>)> = std::fs::read_dir(self.dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let d: Digest = format!("sha256:{}", e.file_name().to_string_lossy())
                    .parse()
                    .unwrap();
                (d, std::fs::read(e.path()).unwrap())
            })
            .collect();
        all.sort_by_key(|(d, _)| *d);
        all
    }

    /// An image of the given layers (uncompressed tars) for one platform; returns the
    /// manifest's bytes.
    pub fn image(&self, arch: &str, layers: &[Vec<u8>]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| Digest::sha256_of(l).to_string())
            .collect();
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        self.blob(&config);
        for l in layers {
            self.blob(l);
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config),
            "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
        }))
        .unwrap();
        self.blob(&manifest);
        manifest
    }

    /// An index over manifests (each with its platform's architecture).
    pub fn index(&self, manifests: &[(&str, &[u8])]) -> Vec<u8> {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(arch, m)| {
                let mut d = descriptor(OCI_MANIFEST, m);
                d["platform"] = json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        }))
        .unwrap();
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
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }
}
