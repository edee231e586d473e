use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::task::tests::{replay_client, replay_client_with, Replay, Req, Resp};
use crate::ClientOptions;

fn sdk() -> url::Url {
    url::Url::parse("https://vc.example.com/sdk").unwrap()
}

#[test]
fn urls_encode_every_part() {
    let url = datastore_url(&sdk(), "DC0", "LocalDS_0", "asr/payload.txt").unwrap();
    assert_eq!(
        url.as_str(),
        "https://vc.example.com/folder/asr/payload.txt?dcPath=DC0&dsName=LocalDS_0"
    );
    let url = datastore_url(&sdk(), "dcs/DC 1", "ds&x=1", "/web 01/disk#1?.vmdk").unwrap();
    assert_eq!(url.path(), "/folder/web%2001/disk%231%3F.vmdk");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        pairs,
        [
            ("dcPath".to_string(), "dcs/DC 1".to_string()),
            ("dsName".to_string(), "ds&x=1".to_string())
        ]
    );
}

#[test]
fn bad_names_and_paths_are_refused() {
    for (dc, ds, path) in [
        ("", "ds", "a"),
        ("DC0", " ", "a"),
        ("DC\n0", "ds", "a"),
        ("DC0", "ds", ""),
        ("DC0", "ds", "/"),
        ("DC0", "ds", "a//b"),
        ("DC0", "ds", "a/"),
        ("DC0", "ds", "../etc/passwd"),
        ("DC0", "ds", "a/./b"),
        ("DC0", "ds", "a\u{0}b"),
    ] {
        assert!(
            matches!(
                datastore_url(&sdk(), dc, ds, path),
                Err(VsphereError::InvalidInput { .. })
            ),
            "{dc:?} {ds:?} {path:?}"
        );
    }
}

#[test]
fn ranges_and_content_ranges() {
    assert_eq!(range_header(&(6..17)).unwrap(), "bytes=6-16");
    assert_eq!(range_header(&(0..1)).unwrap(), "bytes=0-0");
    #[allow(clippy::reversed_empty_ranges)]
    for bad in [5..5, 9..3] {
        assert!(matches!(
            range_header(&bad),
            Err(VsphereError::InvalidInput { .. })
        ));
    }
    assert_eq!(content_range_start("bytes 6-16/17"), Some(6));
    assert_eq!(content_range_start(" bytes 0-0/*"), Some(0));
    for bad in ["6-16/17", "bytes x-16/17", "bytes 6-16", "", "bytes */17"] {
        assert_eq!(content_range_start(bad), None, "{bad}");
    }
}

/// A datastore on the replay server: files by path, Range support like vcsim's (Go's
/// http.ServeContent), 404 for unknown files.
#[derive(Default)]
struct Files {
    files: Mutex<HashMap<String, Vec<u8>>>,
    /// Answer the next N file requests with 401 (an expired session).
    expire: Mutex<usize>,
    /// Ignore Range headers (answer 200 with the whole file).
    no_ranges: bool,
}

impl Files {
    fn answer(&self, req: &Req) -> Resp {
        {
            let mut expire = self.expire.lock().unwrap();
            if *expire > 0 {
                *expire -= 1;
                return Resp::new(401, "");
            }
        }
        let path = req.target.split('?').next().unwrap().to_string();
        let mut files = self.files.lock().unwrap();
        match req.method.as_str() {
            "PUT" => {
                files.insert(path, req.body.clone());
                Resp::new(201, "")
            }
            "GET" => {
                let Some(data) = files.get(&path) else {
                    return Resp::new(404, "404 page not found");
                };
                let range = req
                    .header("Range")
                    .filter(|_| !self.no_ranges)
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split_once('-'))
                    .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
                match range {
                    None => Resp::new(200, data.clone()),
                    Some((first, _)) if first >= data.len() => Resp::new(416, ""),
                    Some((first, last)) => {
                        let last = last.min(data.len() - 1);
                        Resp::new(206, data[first..=last].to_vec()).header(
                            "Content-Range",
                            &format!("bytes {first}-{last}/{}", data.len()),
                        )
                    }
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
}

async fn datastore(files: Arc<Files>) -> (Client, Replay) {
    replay_client(Arc::new(move |req: &Req| files.answer(req))).await
}

const FILE: &str = "/folder/asr/payload.txt";

#[tokio::test]
async fn put_then_get_whole_and_ranges_with_the_session_cookie() {
    let files = Arc::new(Files::default());
    let (client, server) = datastore(files.clone()).await;
    client
        .datastore_put(
            "DC0",
            "LocalDS_0",
            "asr/payload.txt",
            b"hello replication".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(
        files.files.lock().unwrap().get(FILE).unwrap(),
        b"hello replication"
    );
    let whole = client
        .datastore_get("DC0", "LocalDS_0", "asr/payload.txt", None)
        .await
        .unwrap();
    assert_eq!(whole, b"hello replication");
    let part = client
        .datastore_get("DC0", "LocalDS_0", "asr/payload.txt", Some(6..17))
        .await
        .unwrap();
    assert_eq!(part, b"replication");
    // A range reaching past the end is cut short at the end of the file.
    let tail = client
        .datastore_get("DC0", "LocalDS_0", "asr/payload.txt", Some(12..1000))
        .await
        .unwrap();
    assert_eq!(tail, b"ation");
    let mut streamed = Vec::new();
    let n = client
        .datastore_get_to(
            "DC0",
            "LocalDS_0",
            "asr/payload.txt",
            Some(0..5),
            &mut streamed,
        )
        .await
        .unwrap();
    assert_eq!((n, streamed.as_slice()), (5, b"hello".as_slice()));
    let file_requests: Vec<Req> = server
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/folder/"))
        .collect();
    assert_eq!(file_requests.len(), 5);
    for r in &file_requests {
        assert_eq!(r.target, format!("{FILE}?dcPath=DC0&dsName=LocalDS_0"));
        assert_eq!(
            r.header("Cookie"),
            Some("vmware_soap_session=\"replay-session\"")
        );
    }
    assert_eq!(file_requests[2].header("Range"), Some("bytes=6-16"));
}

#[tokio::test]
async fn missing_files_bad_ranges_and_server_errors_are_typed() {
    let files = Arc::new(Files::default());
    files
        .files
        .lock()
        .unwrap()
        .insert(FILE.into(), b"0123456789".to_vec());
    let (client, _server) = datastore(files.clone()).await;
    match client
        .datastore_get("DC0", "LocalDS_0", "asr/missing.txt", None)
        .await
    {
        Err(VsphereError::NotFound { what }) => {
            assert!(what.contains("asr/missing.txt"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    let err = client
        .datastore_get("DC0", "LocalDS_0", "asr/payload.txt", Some(50..60))
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::InvalidInput { .. }), "{err:?}");
    assert!(matches!(
        client
            .datastore_get("DC0", "LocalDS_0", "asr/payload.txt", Some(4..4))
            .await,
        Err(VsphereError::InvalidInput { .. })
    ));
    assert!(matches!(
        client.datastore_get("DC0", "LocalDS_0", "../x", None).await,
        Err(VsphereError::InvalidInput { .. })
    ));
    let (client, _server) = replay_client(Arc::new(|_req: &Req| Resp::new(503, "busy"))).await;
    let err = client
        .datastore_put("DC0", "ds", "a", vec![1])
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::Http { status: 503 }));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_expired_session_logs_in_again_once() {
    let files = Arc::new(Files::default());
    *files.expire.lock().unwrap() = 1;
    let (client, server) = datastore(files.clone()).await;
    client
        .datastore_put("DC0", "ds", "a.bin", vec![7; 10])
        .await
        .unwrap();
    assert_eq!(server.calls("Login").len(), 2);
    *files.expire.lock().unwrap() = 1;
    assert_eq!(
        client
            .datastore_get("DC0", "ds", "a.bin", None)
            .await
            .unwrap(),
        vec![7; 10]
    );
    assert_eq!(server.calls("Login").len(), 3);
    // Still 401 after the new login: not authenticated, and no endless loop.
    *files.expire.lock().unwrap() = 2;
    assert!(matches!(
        client.datastore_get("DC0", "ds", "a.bin", None).await,
        Err(VsphereError::NotAuthenticated)
    ));
    assert_eq!(server.calls("Login").len(), 4);
}

#[tokio::test]
async fn a_server_without_ranges_is_sliced_and_a_wrong_content_range_is_malformed() {
    let files = Arc::new(Files {
        no_ranges: true,
        ..Files::default()
    });
    files
        .files
        .lock()
        .unwrap()
        .insert(FILE.into(), b"hello replication".to_vec());
    let (client, _server) = datastore(files).await;
    assert_eq!(
        client
            .datastore_get("DC0", "ds", "asr/payload.txt", Some(6..17))
            .await
            .unwrap(),
        b"replication"
    );
    let (client, _server) = replay_client(Arc::new(|_req: &Req| {
        Resp::new(206, "abc").header("Content-Range", "bytes 0-2/100")
    }))
    .await;
    let err = client
        .datastore_get("DC0", "ds", "f", Some(10..13))
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::Malformed { .. }), "{err:?}");
    // Content-Range promises 3 bytes of a 100-byte file; 2 arrive with a matching length.
    let (client, _server) = replay_client(Arc::new(|_req: &Req| {
        Resp::new(206, "ab").header("Content-Range", "bytes 10-12/100")
    }))
    .await;
    let err = client
        .datastore_get("DC0", "ds", "f", Some(10..13))
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn reading_into_memory_is_capped() {
    let files = Arc::new(Files::default());
    files
        .files
        .lock()
        .unwrap()
        .insert("/folder/big".into(), vec![1; 65536]);
    let options = ClientOptions {
        max_response_bytes: 16384,
        ..ClientOptions::default()
    };
    let handler = files.clone();
    let (client, _server) =
        replay_client_with(Arc::new(move |req: &Req| handler.answer(req)), options).await;
    for range in [None, Some(0..20000)] {
        let err = client
            .datastore_get("DC0", "ds", "big", range.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, VsphereError::InvalidInput { .. }),
            "{range:?} {err:?}"
        );
    }
    // Streaming has no cap.
    let mut out = Vec::new();
    let n = client
        .datastore_get_to("DC0", "ds", "big", None, &mut out)
        .await
        .unwrap();
    assert_eq!((n, out.len()), (65536, 65536));
}

#[tokio::test]
async fn put_file_streams_from_the_current_position_and_again_after_a_new_login() {
    let dir = std::env::temp_dir().join(format!(
        "vsphere-put-file-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("disk.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let files = Arc::new(Files::default());
    *files.expire.lock().unwrap() = 1;
    let (client, server) = datastore(files.clone()).await;
    let mut file = tokio::fs::File::open(&local).await.unwrap();
    file.seek(SeekFrom::Start(1000)).await.unwrap();
    let sent = client
        .datastore_put_file("DC0", "ds", "seed/disk.bin", file)
        .await
        .unwrap();
    assert_eq!(sent, 199_000);
    assert_eq!(
        files
            .files
            .lock()
            .unwrap()
            .get("/folder/seed/disk.bin")
            .unwrap(),
        &data[1000..]
    );
    assert_eq!(server.calls("Login").len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
