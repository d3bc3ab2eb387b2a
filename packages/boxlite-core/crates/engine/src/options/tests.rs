//! Defaults and the messages of out-of-range options.

use super::*;

fn with_image() -> BoxOptions {
    BoxOptions {
        rootfs_path: Some("/img".into()),
        ..Default::default()
    }
}

#[test]
fn defaults_follow_the_reference_documentation() {
    let o = BoxOptions::default();
    assert_eq!((o.cpus, o.memory_mib, o.auto_remove), (1, 2048, true));
    with_image().validate().unwrap();
}

#[test]
fn out_of_range_options_name_the_allowed_range() {
    let err = BoxOptions {
        memory_mib: 64,
        ..with_image()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("memory_mib=64") && err.contains("128 to 65536"),
        "{err}"
    );
    let err = BoxOptions {
        cpus: 0,
        ..with_image()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("cpus=0"), "{err}");
    let err = BoxOptions {
        working_dir: Some("rel".into()),
        ..with_image()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("absolute"), "{err}");
    let err = BoxOptions::default().validate().unwrap_err().to_string();
    assert!(err.contains("no image"), "{err}");
    let err = BoxOptions {
        copy_out_max_bytes: 100,
        ..with_image()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("copy_out_max_bytes=100"), "{err}");
    let err = BoxOptions {
        max_output_bytes: MAX_OUTPUT_BYTES_MAX + 1,
        ..with_image()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_output_bytes") && err.contains("1 GiB"),
        "{err}"
    );
}
