//! Snapshots: every live point of a collection at one log sequence number, written atomically
//! (temporary file, fsync, rename, fsync of the directory) as `snapshot.bin`:
//!
//! ```text
//! "INFDVEC1"  u64 seq  u64 count  count points (see `codec`)  u32 crc32(everything before)
//! ```

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::codec::{self, Reader, StoredPoint};
use crate::error::{Error, Result};
use crate::point::PointId;
use crate::wal::sync_dir;

const MAGIC: &[u8; 8] = b"INFDVEC1";
pub const FILE: &str = "snapshot.bin";

/// Builds a snapshot in memory (done with writes held, so it is consistent with `seq`).
pub struct Encoder {
    buf: Vec<u8>,
    count: u64,
}

impl Encoder {
    pub fn new(seq: u64, capacity: usize) -> Encoder {
        let mut buf = Vec::with_capacity(capacity + 28);
        buf.extend_from_slice(MAGIC);
        codec::put_u64(&mut buf, seq);
        codec::put_u64(&mut buf, 0);
        Encoder { buf, count: 0 }
    }

    pub fn point(&mut self, id: &PointId, vector: &[f32], payload: Option<&Value>) {
        codec::put_point(&mut self.buf, id, vector, payload);
        self.count += 1;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[16..24].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&self.buf);
        codec::put_u32(&mut self.buf, crc);
        self.buf
    }
}

/// Writes `bytes` as the snapshot in `dir`, atomically.
pub fn write(dir: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let path = dir.join(FILE);
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = std::fs::File::create(&tmp).map_err(Error::io(ctx("creating")))?;
    f.write_all(bytes).map_err(Error::io(ctx("writing")))?;
    f.sync_all().map_err(Error::io(ctx("syncing")))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(Error::io(format!(
        "renaming {} to {}",
        tmp.display(),
        path.display()
    )))?;
    sync_dir(dir)
}

/// Reads the snapshot in `dir`: its sequence number and points (`(0, [])` when there is none).
pub fn read(dir: &Path) -> Result<(u64, Vec<StoredPoint>)> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, Vec::new())),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    };
    let corrupt = |m: &str| Error::Corrupt(format!("{}: {m}", path.display()));
    if bytes.len() < 28 || &bytes[..8] != MAGIC {
        return Err(corrupt("not a snapshot"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader::new(&body[8..]);
    let seq = r.u64()?;
    let count = r.u64()?;
    let mut points = Vec::with_capacity(count.min(1 << 24) as usize);
    for _ in 0..count {
        points.push(r.point()?);
    }
    if !r.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok((seq, points))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), (0, vec![]));
        let mut e = Encoder::new(42, 0);
        e.point(&PointId::Num(1), &[1.0, 2.0], Some(&json!({"g": 1})));
        e.point(&"b".into(), &[3.0, 4.0], None);
        write(d.path(), &e.finish()).unwrap();
        let (seq, pts) = read(d.path()).unwrap();
        assert_eq!((seq, pts.len()), (42, 2));
        assert_eq!(pts[1].id, "b".into());
        assert!(!d.path().join("snapshot.bin.tmp").exists());
        let p = d.path().join(FILE);
        let mut b = std::fs::read(&p).unwrap();
        b[30] ^= 1;
        std::fs::write(&p, b).unwrap();
        assert!(matches!(read(d.path()), Err(Error::Corrupt(_))));
    }
}
