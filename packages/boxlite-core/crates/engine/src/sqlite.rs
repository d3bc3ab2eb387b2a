//! Opening the SQLite databases of a home (`db/boxes.db`, `db/images.db`), which several
//! processes use at once.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

/// How long a connection waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::DatabaseBusy || f.code == ErrorCode::DatabaseLocked)
}

/// Runs `op`, retrying while another process holds a lock SQLite's busy handler does not wait
/// for (switching a new database to WAL, creating its tables: both may fail at once with
/// "database is locked" when two processes open a home together).
pub fn retry_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match op() {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// A connection in WAL mode that waits for other processes' locks.
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL"))?;
    Ok(conn)
}

/// Creates the database at `path` if needed and its tables (`schema`, `IF NOT EXISTS`
/// statements).
pub fn create(path: &Path, schema: &str) -> rusqlite::Result<()> {
    let conn = connect(path)?;
    retry_busy(|| conn.execute_batch(schema))
}

/// An engine error for a failed operation on the database `what` (e.g. "box state") at `path`.
pub fn error(what: &str, path: &Path, e: rusqlite::Error) -> crate::Error {
    crate::Error::Io {
        context: format!("{what} {}", path.display()),
        source: std::io::Error::other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_first_opens_all_succeed() {
        let dir = std::env::temp_dir().join(format!("boxlite-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let conn = connect(&path).unwrap();
                    retry_busy(|| conn.execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER);"))
                        .unwrap();
                    retry_busy(|| conn.execute("INSERT INTO t VALUES (?1)", [i])).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n: i64 = connect(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 8);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
