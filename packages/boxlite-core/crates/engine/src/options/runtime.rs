//! The runtime's options: where its home and the guest files are, registries and their
//! credentials (with `BOXLITE_REGISTRY_MIRRORS`), and what preparing one image may write.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeOptions {
    /// `BOXLITE_HOME`, else `~/.boxlite`.
    pub home_dir: Option<PathBuf>,
    /// Directory holding `vmlinux` and `initramfs.cpio` (the Python package passes its own).
    pub guest_dir: Option<PathBuf>,
    /// Registry mirrors and per-registry credentials (mirrors from `BOXLITE_REGISTRY_MIRRORS`
    /// are tried after these).
    #[serde(flatten)]
    pub registry: crate::image::registry::RegistryOptions,
    /// What preparing one image may write (`image_max_bytes`, `image_max_entries`).
    #[serde(flatten)]
    pub image_limits: crate::image::ImageLimits,
}

/// Smallest `image_max_bytes` and `image_max_entries` accepted.
pub const IMAGE_LIMITS_MIN: (u64, u64) = (1 << 20, 16);

impl RuntimeOptions {
    /// The image limits, checked.
    pub fn image_limits(&self) -> Result<crate::image::ImageLimits> {
        let limits = self.image_limits;
        let (min_bytes, min_entries) = IMAGE_LIMITS_MIN;
        if limits.image_max_bytes < min_bytes {
            return Err(Error::InvalidOption(format!(
                "image_max_bytes={} is too small: use at least {min_bytes} (1 MiB)",
                limits.image_max_bytes
            )));
        }
        if limits.image_max_entries < min_entries {
            return Err(Error::InvalidOption(format!(
                "image_max_entries={} is too small: use at least {min_entries}",
                limits.image_max_entries
            )));
        }
        Ok(limits)
    }

    /// The registry options with the mirrors of `BOXLITE_REGISTRY_MIRRORS` added.
    pub fn registry_with_env(&self) -> Result<crate::image::registry::RegistryOptions> {
        use crate::image::registry::{parse_mirrors_env, MIRRORS_ENV};
        let mut registry = self.registry.clone();
        if let Ok(value) = std::env::var(MIRRORS_ENV) {
            let from_env =
                parse_mirrors_env(&value).map_err(|e| Error::InvalidOption(e.to_string()))?;
            for (name, urls) in from_env {
                let list = registry.registry_mirrors.entry(name).or_default();
                for url in urls {
                    if !list.contains(&url) {
                        list.push(url);
                    }
                }
            }
        }
        for r in &registry.image_registries {
            if r.host.is_empty() || r.host.contains('/') {
                return Err(Error::InvalidOption(format!(
                    "image_registries: host {:?} must be a host name with an optional port, e.g. ghcr.io or 127.0.0.1:5000",
                    r.host
                )));
            }
        }
        Ok(registry)
    }
}
