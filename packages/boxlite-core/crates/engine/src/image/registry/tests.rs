//! Reference normalisation, mirrors and the manifest size error.

use super::endpoint::{is_loopback, mirror_endpoint};
use super::error::ManifestError;
use super::retry::Transient;
use super::*;
use crate::image::metadata;

#[test]
fn an_oversized_manifest_is_named_as_before_and_not_retried() {
    let limit = metadata::MAX_METADATA_BYTES;
    let announced = ManifestError::TooLarge {
        length: Some(limit + 1),
        limit,
    };
    assert_eq!(
        announced.to_string(),
        format!("the manifest is {} bytes long: an image's metadata may have at most {limit} bytes; cut off", limit + 1)
    );
    let cut_off = ManifestError::TooLarge {
        length: None,
        limit: 4194304,
    };
    assert_eq!(
        cut_off.to_string(),
        "the manifest is over 4194304 bytes long: an image's metadata may have at most 4194304 bytes; cut off"
    );
    assert!(!cut_off.transient());
}

#[test]
fn references_are_normalised_as_docker_does() {
    let r = parse_reference("python:slim").unwrap();
    assert_eq!(canonical(&r), "docker.io/library/python:slim");
    let r = parse_reference("alpine").unwrap();
    assert_eq!(canonical(&r), "docker.io/library/alpine:latest");
    let r = parse_reference("127.0.0.1:5000/team/app:1").unwrap();
    assert_eq!(
        (r.registry(), r.repository()),
        ("127.0.0.1:5000", "team/app")
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    let r = parse_reference(&format!("ghcr.io/org/x@{digest}")).unwrap();
    assert_eq!(r.digest(), Some(digest.as_str()));
    for bad in ["", "UPPER/case", "a b", "x@sha256:zz"] {
        let err = parse_reference(bad).unwrap_err().to_string();
        assert!(err.contains("reference"), "{bad}: {err}");
    }
}

#[test]
fn mirrors_parse_and_plain_http_is_only_for_loopback() {
    let m = parse_mirrors_env("docker.io=http://127.0.0.1:5000, ghcr.io=https://m.example,docker.io=http://localhost:6000").unwrap();
    assert_eq!(
        m["docker.io"],
        vec!["http://127.0.0.1:5000", "http://localhost:6000"]
    );
    assert!(parse_mirrors_env("nonsense").is_err());
    let options = RegistryOptions::default();
    assert!(
        mirror_endpoint("docker.io", "http://127.0.0.1:5000", &options)
            .unwrap()
            .http
    );
    let err = mirror_endpoint("docker.io", "http://10.1.2.3:5000", &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("insecure=True"), "{err}");
    let allowed = RegistryOptions {
        image_registries: vec![ImageRegistry {
            host: "10.1.2.3:5000".into(),
            insecure: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(mirror_endpoint("docker.io", "http://10.1.2.3:5000", &allowed).is_ok());
    assert!(is_loopback("[::1]:5000") && is_loopback("localhost") && !is_loopback("example.com"));
}

#[test]
fn source_and_download_errors_read_as_before() {
    use super::error::{DownloadCause, SourceError};
    let digest = format!("sha256:{}", "a".repeat(64));
    let cases = [
        (
            SourceError::Blob {
                digest: digest.clone(),
                source: DownloadCause::Size {
                    total: 10,
                    downloaded: 4,
                },
            },
            format!("blob {digest}: size mismatch: the manifest states 10 bytes, the registry sent 4"),
        ),
        (
            SourceError::Blob {
                digest: digest.clone(),
                source: DownloadCause::TooLong { total: 10 },
            },
            format!("blob {digest}: size mismatch: the registry sent more than the 10 bytes the manifest states; cut off"),
        ),
        (
            SourceError::Blob {
                digest: digest.clone(),
                source: DownloadCause::Digest {
                    actual: "sha256:b".into(),
                },
            },
            format!("blob {digest}: digest mismatch: the content served hashes to sha256:b"),
        ),
        (
            SourceError::TooManyLayers {
                count: 300,
                max: 256,
            },
            "the image has 300 layers, more than the 256 supported".into(),
        ),
        (
            SourceError::NoPlatform {
                arch: "amd64".into(),
                offered: "none".into(),
            },
            "the image has no linux/amd64 variant (it offers: none)".into(),
        ),
        (
            SourceError::ManifestDigest {
                wanted: "sha256:a".into(),
                actual: "sha256:b".into(),
            },
            "digest mismatch: asked for sha256:a, the manifest served hashes to sha256:b".into(),
        ),
        (
            crate::image::layout::check_digest("md5:x").unwrap_err().into(),
            "unsupported digest md5:x (only sha256)".into(),
        ),
        (
            crate::image::metadata::check_stated("the image config", u64::MAX)
                .unwrap_err()
                .into(),
            format!(
                "the image config is stated to have {} bytes, more than the {} an image's metadata may have",
                u64::MAX,
                metadata::MAX_METADATA_BYTES
            ),
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn pull_errors_read_as_before() {
    use super::error::{DownloadCause, SourceError, SourceFailure};
    let options = RegistryOptions::default();
    let cases = [
        (
            parse_reference("  ").unwrap_err(),
            "the image reference is empty".to_owned(),
        ),
        (
            parse_reference("UPPER/case").unwrap_err(),
            "\"UPPER/case\" is not a valid image reference (repository names must be lowercase); use NAME[:TAG] or NAME@sha256:DIGEST, e.g. `python:slim` or `ghcr.io/org/app:1.0`".to_owned(),
        ),
        (
            parse_mirrors_env("nonsense").unwrap_err(),
            "BOXLITE_REGISTRY_MIRRORS: \"nonsense\" is not REGISTRY=URL (e.g. docker.io=http://127.0.0.1:5000)".to_owned(),
        ),
        (
            mirror_endpoint("docker.io", "http://a/b", &options).unwrap_err(),
            "mirror \"http://a/b\" of docker.io: give scheme and host only, e.g. http://127.0.0.1:5000".to_owned(),
        ),
        (
            mirror_endpoint("docker.io", "ftp://a", &options).unwrap_err(),
            "mirror \"ftp://a\" of docker.io: unsupported scheme \"ftp\" (use http or https)".to_owned(),
        ),
        (
            mirror_endpoint("docker.io", "http://10.1.2.3:5000", &options).unwrap_err(),
            "mirror \"http://10.1.2.3:5000\" of docker.io: plain HTTP is allowed only for loopback hosts; to allow it for 10.1.2.3:5000, add ImageRegistry(host=\"10.1.2.3:5000\", insecure=True) to image_registries".to_owned(),
        ),
        (
            PullError::Refused {
                label: "https://ghcr.io".into(),
                error: SourceError::TooManyLayers {
                    count: 300,
                    max: 256,
                },
            },
            "from https://ghcr.io: the image has 300 layers, more than the 256 supported".to_owned(),
        ),
        (
            PullError::Failed(vec![
                SourceFailure {
                    label: "http://127.0.0.1:5000 (mirror of docker.io)".into(),
                    error: SourceError::Blob {
                        digest: "sha256:a".into(),
                        source: DownloadCause::Size {
                            total: 2,
                            downloaded: 1,
                        },
                    },
                },
                SourceFailure {
                    label: "https://registry-1.docker.io".into(),
                    error: SourceError::TooManyLayers { count: 9, max: 8 },
                },
            ]),
            "http://127.0.0.1:5000 (mirror of docker.io): blob sha256:a: size mismatch: the manifest states 2 bytes, the registry sent 1; https://registry-1.docker.io: the image has 9 layers, more than the 8 supported".to_owned(),
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
    let unreachable = PullError::Failed(vec![SourceFailure {
        label: "https://x".into(),
        error: SourceError::Blob {
            digest: "sha256:a".into(),
            source: DownloadCause::Stream(std::io::Error::other("the request timed out")),
        },
    }]);
    assert!(unreachable
        .to_string()
        .ends_with("(offline or air-gapped? point registry_mirrors or BOXLITE_REGISTRY_MIRRORS at a reachable mirror)"));
}
