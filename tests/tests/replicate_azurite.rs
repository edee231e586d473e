//! The same end-to-end replication into Azure Blob storage: Microsoft's Azurite (from npm), started on
//! loopback by the test through scripts/azurite.sh; the appliance creates its container itself.

use ferry_tests::image::{change_files, real_ext4};
use ferry_tests::{e2fsck_clean, points, restore, sha256_file, Agent, Appliance, Azurite};

#[test]
fn ext4_image_two_points_restore_exactly_from_azurite() {
    let azurite = Azurite::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let img = real_ext4(t.path(), 256).unwrap();
    let sha1 = sha256_file(&img);

    let url = format!(
        "az://devstoreaccount1/ferry-vault?endpoint={}",
        azurite.blob_url
    );
    let app = Appliance::start(
        &t.path().join("data"),
        &[
            ("APPLIANCE_VAULT_URL", &url),
            ("APPLIANCE_AZURE_ACCESS_KEY", Azurite::KEY),
        ],
    )
    .unwrap();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let p1 = agent.once(&[&img]).unwrap();
    change_files(&img, &t.path().join("change"), 7).unwrap();
    let sha2 = sha256_file(&img);
    let p2 = agent.once(&[&img]).unwrap();

    let list = points(&app).unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let machine = list[0]["machine"].as_str().unwrap();
    let disk = list[0]["disk"].as_str().unwrap();
    for (point, want) in [(&p1, &sha1), (&p2, &sha2)] {
        let out = t.path().join(format!("{point}.img"));
        restore(&app, machine, disk, point, &out, "raw").unwrap();
        assert_eq!(
            &sha256_file(&out),
            want,
            "point {point} from Azurite differs"
        );
        assert!(e2fsck_clean(&out));
    }
    // Nothing was written to the local folder vault: the data went to Azure.
    assert!(!app.data_dir.join("vault").join("config").exists());
}
