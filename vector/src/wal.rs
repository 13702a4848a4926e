//! The write-ahead log of a collection: every upsert and delete is appended and fsynced before
//! it is applied and acknowledged.
//!
//! The log is a series of segments `wal-<first seq>.log`; a snapshot at sequence `S` starts a
//! new segment at `S + 1` and, once the snapshot is durable, removes the older ones. A record:
//!
//! ```text
//! u32 len  u32 crc32(body)  body = u64 seq, u8 op, u32 count, then count points (op 1, upsert)
//!                                   or count ids (op 2, delete) — see `codec`
//! ```
//!
//! Replay stops at the first record that is short or fails its checksum — the tail a `kill -9`
//! can leave mid-write, which was never acknowledged — and cuts it off, so appends continue
//! from the last good record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::{self, Reader, StoredPoint};
use crate::error::{Error, Result};
use crate::point::PointId;

const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;

/// An operation to log (borrowed).
pub enum Op<'a> {
    Upsert(&'a [StoredPoint]),
    Delete(&'a [PointId]),
}

/// An operation read back.
#[derive(Debug, PartialEq)]
pub enum Replayed {
    Upsert(Vec<StoredPoint>),
    Delete(Vec<PointId>),
}

pub struct Wal {
    dir: PathBuf,
    file: File,
    /// Length of the current segment up to its last complete record.
    len: u64,
    /// Bytes logged since the last snapshot, every segment together.
    bytes: u64,
}

fn segment_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

/// The segments in `dir`, by first sequence number.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io(format!("listing {}", dir.display())))? {
        let e = e.map_err(Error::io(format!("listing {}", dir.display())))?;
        let name = e.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix("wal-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, e.path()));
    }
    out.sort();
    Ok(out)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("syncing directory {}", dir.display())))
}

fn encode(seq: u64, op: &Op<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    codec::put_u64(&mut body, seq);
    match op {
        Op::Upsert(points) => {
            body.push(OP_UPSERT);
            codec::put_u32(&mut body, points.len() as u32);
            for p in *points {
                codec::put_point(&mut body, &p.id, &p.vector, p.payload.as_ref());
            }
        }
        Op::Delete(ids) => {
            body.push(OP_DELETE);
            codec::put_u32(&mut body, ids.len() as u32);
            for id in *ids {
                codec::put_id(&mut body, id);
            }
        }
    }
    let mut rec = Vec::with_capacity(body.len() + 8);
    codec::put_u32(
        &mut rec,
        u32::try_from(body.len()).expect("a record is under 4 GiB"),
    );
    codec::put_u32(&mut rec, crc32fast::hash(&body));
    rec.extend_from_slice(&body);
    rec
}

fn decode(body: &[u8]) -> Result<(u64, Replayed)> {
    let mut r = Reader::new(body);
    let seq = r.u64()?;
    let op = r.u8()?;
    let n = r.u32()? as usize;
    let op = match op {
        OP_UPSERT => Replayed::Upsert((0..n).map(|_| r.point()).collect::<Result<_>>()?),
        OP_DELETE => Replayed::Delete((0..n).map(|_| r.id()).collect::<Result<_>>()?),
        t => return Err(Error::Corrupt(format!("unknown log operation {t}"))),
    };
    Ok((seq, op))
}

/// Parses one segment's records; returns the length of its valid prefix.
fn read_segment(buf: &[u8], mut f: impl FnMut(u64, Replayed)) -> (u64, Option<String>) {
    let mut pos = 0usize;
    while pos < buf.len() {
        let Some(head) = buf.get(pos..pos + 8) else {
            return (pos as u64, Some("record header cut short".into()));
        };
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        let Some(body) = buf.get(pos + 8..pos + 8 + len) else {
            return (pos as u64, Some("record cut short".into()));
        };
        if crc32fast::hash(body) != crc {
            return (pos as u64, Some("record checksum mismatch".into()));
        }
        match decode(body) {
            Ok((seq, op)) => f(seq, op),
            Err(e) => return (pos as u64, Some(e.to_string())),
        }
        pos += 8 + len;
    }
    (pos as u64, None)
}

impl Wal {
    /// Replays the log in `dir`, handing `f` every operation with a sequence number above
    /// `after` (what the snapshot already holds), and opens it for appending. Returns the log
    /// and the last sequence number found (at least `after`).
    pub fn open(dir: &Path, after: u64, mut f: impl FnMut(u64, Replayed)) -> Result<(Wal, u64)> {
        let segs = segments(dir)?;
        let mut last = after;
        let mut bytes = 0;
        for (i, (_, path)) in segs.iter().enumerate() {
            let buf =
                std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
            let (valid, problem) = read_segment(&buf, |seq, op| {
                if seq > after {
                    last = last.max(seq);
                    f(seq, op);
                }
            });
            bytes += valid;
            if let Some(problem) = problem {
                let dropped = buf.len() as u64 - valid;
                tracing::warn!(
                    segment = %path.display(),
                    dropped_bytes = dropped,
                    problem,
                    "write-ahead log ends in an incomplete record (an interrupted, unacknowledged write); cutting it off"
                );
                if i + 1 < segs.len() {
                    tracing::error!(segment = %path.display(), "the incomplete record is not in the last segment");
                }
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(Error::io(format!("opening {}", path.display())))?;
                file.set_len(valid)
                    .and_then(|_| file.sync_all())
                    .map_err(Error::io(format!("truncating {}", path.display())))?;
            }
        }
        let path = match segs.last() {
            Some((_, p)) => p.clone(),
            None => dir.join(segment_name(last + 1)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(format!("opening {}", path.display())))?;
        let len = file
            .metadata()
            .map_err(Error::io(format!("reading {}", path.display())))?
            .len();
        if segs.is_empty() {
            sync_dir(dir)?;
        }
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                file,
                len,
                bytes,
            },
            last,
        ))
    }

    /// Appends one operation and fsyncs it. On failure the partial record is cut off again, so
    /// the log stays readable.
    pub fn append(&mut self, seq: u64, op: Op<'_>) -> Result<()> {
        let rec = encode(seq, &op);
        let res = self
            .file
            .write_all(&rec)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = res {
            let _ = self.file.set_len(self.len);
            return Err(Error::Io {
                context: format!("writing the log in {}", self.dir.display()),
                source: e,
            });
        }
        self.len += rec.len() as u64;
        self.bytes += rec.len() as u64;
        Ok(())
    }

    /// Starts a new segment whose first record will be `next_seq` (called with writes held).
    pub fn rotate(&mut self, next_seq: u64) -> Result<()> {
        let path = self.dir.join(segment_name(next_seq));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(format!("creating {}", path.display())))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.len = 0;
        self.bytes = 0;
        Ok(())
    }

    /// Removes the segments before the one starting at `first_seq` (after a snapshot).
    pub fn remove_before(dir: &Path, first_seq: u64) -> Result<()> {
        for (seq, path) in segments(dir)? {
            if seq < first_seq {
                std::fs::remove_file(&path)
                    .map_err(Error::io(format!("removing {}", path.display())))?;
            }
        }
        sync_dir(dir)
    }

    /// Bytes logged since the last snapshot.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde_json::json;

    use super::*;

    fn pt(id: u64) -> StoredPoint {
        StoredPoint {
            id: PointId::Num(id),
            vector: vec![id as f32, 1.0],
            payload: Some(json!({"i": id})),
        }
    }

    fn replay(dir: &Path, after: u64) -> (Vec<(u64, Replayed)>, u64) {
        let mut ops = Vec::new();
        let (_, last) = Wal::open(dir, after, |s, op| ops.push((s, op))).unwrap();
        (ops, last)
    }

    #[test]
    fn replays_in_order_and_skips_what_the_snapshot_has() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, last) = Wal::open(d.path(), 0, |_, _| panic!("empty")).unwrap();
        assert_eq!(last, 0);
        w.append(1, Op::Upsert(&[pt(1), pt(2)])).unwrap();
        w.append(2, Op::Delete(&[PointId::Num(1), "s".into()]))
            .unwrap();
        w.rotate(3).unwrap();
        w.append(3, Op::Upsert(&[pt(3)])).unwrap();
        drop(w);
        let (ops, last) = replay(d.path(), 0);
        assert_eq!(last, 3);
        assert_eq!(ops[0], (1, Replayed::Upsert(vec![pt(1), pt(2)])));
        assert_eq!(
            ops[1],
            (2, Replayed::Delete(vec![PointId::Num(1), "s".into()]))
        );
        assert_eq!(ops[2], (3, Replayed::Upsert(vec![pt(3)])));
        let (ops, _) = replay(d.path(), 2);
        assert_eq!(ops.len(), 1);
        Wal::remove_before(d.path(), 3).unwrap();
        let (ops, last) = replay(d.path(), 2);
        assert_eq!((ops.len(), last), (1, 3));
    }

    #[test]
    fn torn_tail_is_cut_off_and_appends_continue() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(d.path(), 0, |_, _| {}).unwrap();
        w.append(1, Op::Upsert(&[pt(1)])).unwrap();
        w.append(2, Op::Upsert(&[pt(2)])).unwrap();
        drop(w);
        let seg = segments(d.path()).unwrap()[0].1.clone();
        let full = std::fs::read(&seg).unwrap();
        // A kill -9 in the middle of the third record's write.
        let partial = encode(3, &Op::Upsert(&[pt(3)]));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(&partial[..partial.len() / 2])
            .unwrap();
        let mut seen = Vec::new();
        let (mut w, last) = Wal::open(d.path(), 0, |s, _| seen.push(s)).unwrap();
        assert_eq!((seen, last), (vec![1, 2], 2));
        assert_eq!(std::fs::read(&seg).unwrap(), full, "torn tail removed");
        w.append(3, Op::Upsert(&[pt(3)])).unwrap();
        drop(w);
        assert_eq!(replay(d.path(), 0).1, 3);
        // A flipped bit fails the checksum: replay stops before that record.
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0x40;
        std::fs::write(&seg, &bytes).unwrap();
        assert_eq!(replay(d.path(), 0).1, 2);
    }
}
