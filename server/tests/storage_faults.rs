//! Storage faults with the real binary.
//!
//! - A damaged database (sled's `db` file truncated or overwritten in places after a clean stop):
//!   the server either starts and serves everything that was acknowledged, or exits non-zero with
//!   a clear message, without a panic; never does it serve an older state or a fresh demo county.
//! - A full disk (the data folder on a small tmpfs, filled up while the server runs): senders get
//!   `UNAVAILABLE`, never an acknowledgement for what was not stored; after space is freed and the
//!   server restarted, every acknowledged message is there exactly once and the refused ones can be
//!   resent. Needs `mount` (root): where mounting is not permitted the test says so and passes
//!   without checking.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use lianxin_client::v1::{Category, ErrorCode, SubmitPetition};
use lianxin_client::{ClientError, Wire};

/// How a start of the binary ended: ready (with its child and URL) or exited (status, log).
enum Start {
    Ready(ChildServer),
    Exited(std::process::ExitStatus, String),
}

/// Starts the binary and waits (at most 60 s) for its ready line or its exit.
async fn start(dir: &Path) -> Start {
    let mut child = ChildServer::spawn_on(dir, "127.0.0.1:0");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            log2.lock().unwrap().push_str(&line);
            log2.lock().unwrap().push('\n');
            if !sent && let Some(at) = line.find("ws://") {
                let url: String = line[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                sent = tx.send(Some(url)).is_ok();
            }
        }
        let _ = tx.send(None);
    });
    let got = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the server neither got ready nor exited within 60 s");
    match got {
        Some(url) => {
            let addr = url
                .trim_start_matches("ws://")
                .trim_end_matches("/ws")
                .parse()
                .unwrap();
            Start::Ready(ChildServer { child, url, addr })
        }
        None => {
            let status = child.wait().unwrap();
            let text = log.lock().unwrap().clone();
            Start::Exited(status, text)
        }
    }
}

/// SIGTERM, and wait for the graceful stop.
fn stop_gracefully(mut server: ChildServer) {
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let _ = server.child.wait();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn petition(text: &str) -> SubmitPetition {
    SubmitPetition {
        category: Category::SituationReport as i32,
        title: text.chars().take(8).collect(),
        text: text.into(),
        client_msg_id: "p-1".into(),
        ..Default::default()
    }
}

/// Checks that a petition holds exactly the acknowledged messages, once each, in order.
async fn assert_all_there(url: &str, petition: u64, acked: &BTreeMap<String, u64>) {
    let reader = sign_in(url, "resident-01-1a", Wire::Binary).await;
    let history = reader.get_history(petition, 0, 1000).await.unwrap();
    let seqs: Vec<u64> = history.entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no holes"
    );
    for (cmid, seq) in acked {
        let found: Vec<_> = history
            .entries
            .iter()
            .filter(|e| &e.client_msg_id == cmid)
            .collect();
        assert_eq!(found.len(), 1, "{cmid}");
        assert_eq!(found[0].seq, *seq, "{cmid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_refused_or_recovered_never_served_older() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Start::Ready(server) = start(&data).await else {
        panic!("a fresh folder starts")
    };
    let resident = sign_in(&server.url, "resident-01-1a", Wire::Binary).await;
    let p = resident
        .submit_petition(petition("消防通道被占"))
        .await
        .unwrap();
    let mut acked = BTreeMap::new();
    for i in 0..40 {
        let cmid = format!("m-{i}");
        let ack = resident
            .send_message(p.id, format!("第{i}条"), cmid.clone())
            .await
            .unwrap();
        acked.insert(cmid, ack.seq);
    }
    drop(resident);
    stop_gracefully(server);
    let db_len = std::fs::metadata(data.join("db")).unwrap().len();

    type Damage = Box<dyn Fn(&Path)>;
    let truncate = |keep: u64| -> Damage {
        Box::new(move |d: &Path| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("db"))
                .unwrap();
            f.set_len(keep).unwrap();
        })
    };
    let overwrite = |at: u64| -> Damage {
        Box::new(move |d: &Path| {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("db"))
                .unwrap();
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[0xA5; 64]).unwrap();
        })
    };
    let cases: Vec<(&str, Damage)> = vec![
        ("cut to 95%", truncate(db_len * 95 / 100)),
        ("cut to 60%", truncate(db_len * 60 / 100)),
        ("cut to nothing", truncate(0)),
        ("64 bytes overwritten at 50%", overwrite(db_len / 2)),
        ("64 bytes overwritten at 90%", overwrite(db_len * 9 / 10)),
        ("64 bytes overwritten at 10%", overwrite(db_len / 10)),
    ];
    let mut outcomes = Vec::new();
    for (name, damage) in cases {
        let copy = dir.path().join(name.replace(['%', ' '], "_"));
        copy_dir(&data, &copy);
        damage(&copy);
        // Twice: the same answer each time, never a panic.
        for attempt in 0..2 {
            match start(&copy).await {
                Start::Ready(server) => {
                    assert_all_there(&server.url, p.id, &acked).await;
                    outcomes.push(format!(
                        "{name}: started with everything (attempt {attempt})"
                    ));
                    stop_gracefully(server);
                }
                Start::Exited(status, log) => {
                    assert!(!status.success(), "{name}: exited 0\n{log}");
                    assert!(!log.contains("panicked"), "{name}: panicked\n{log}");
                    assert!(
                        log.contains("missing data it had on disk")
                            || log.contains("corrupt")
                            || log.contains("Corrupt"),
                        "{name}: no clear message\n{log}"
                    );
                    outcomes.push(format!("{name}: refused (attempt {attempt})"));
                }
            }
        }
    }
    eprintln!("{}", outcomes.join("\n"));
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_errors_never_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk case is unchecked"
        );
        return;
    }
    let _mount = Mount(mnt.clone());
    let data = mnt.join("data");
    let Start::Ready(server) = start(&data).await else {
        panic!("starts on the tmpfs")
    };
    let resident = sign_in(&server.url, "resident-01-1a", Wire::Binary).await;
    let p = resident.submit_petition(petition("积水")).await.unwrap();
    // Fill the file system.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut acked = BTreeMap::new();
    let mut refused = Vec::new();
    let text = "满".repeat(1000);
    for i in 0..400 {
        let cmid = format!("m-{i}");
        match resident
            .send_message(p.id, text.clone(), cmid.clone())
            .await
        {
            Ok(ack) => {
                acked.insert(cmid, ack.seq);
            }
            Err(ClientError::Server { code, message }) => {
                assert_eq!(code, ErrorCode::Unavailable, "{message}");
                refused.push(cmid);
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert!(!refused.is_empty(), "a full disk refuses writes");
    // The server says it is not ready while its writes fail.
    let readyz = http_get(server.addr, "/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 503") && readyz.contains("writes are failing"),
        "{readyz}"
    );
    drop(resident);
    // Free the space and restart on the same folder.
    server.kill();
    std::fs::remove_file(&filler).unwrap();
    let Start::Ready(server) = start(&data).await else {
        panic!("restarts once space is free")
    };
    assert_all_there(&server.url, p.id, &acked).await;
    // What was refused can be sent again, and is stored once.
    let resident = sign_in(&server.url, "resident-01-1a", Wire::Binary).await;
    for cmid in refused.iter().take(5) {
        let ack = resident
            .send_message(p.id, "再发一次", cmid.clone())
            .await
            .unwrap();
        acked.insert(cmid.clone(), ack.seq);
    }
    drop(resident);
    assert_all_there(&server.url, p.id, &acked).await;
    eprintln!(
        "full disk: {} acknowledged before the disk refused, {} refused with UNAVAILABLE",
        acked.len() - 5,
        refused.len()
    );
    stop_gracefully(server);
}
