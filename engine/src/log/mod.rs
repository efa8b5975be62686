//! The log: write-ahead log and replication log in one.
//!
//! Every originated or received delta, every local full-state join (read
//! repair, full sync) and every applied-vector join is appended here before
//! it touches the object store. The log is the durability point: a write is
//! acknowledged once its record is fdatasync'ed (see [`group`]).
//!
//! On disk: segment files `log/<start position>.seg`, each a sequence of
//! frames `[len: u32 LE][crc32 of payload: u32 LE][payload]`, payload =
//! `[format version][rkyv archive of Entry]`. Positions (LSNs) are byte
//! offsets in the concatenation of all segments, so a segment's file name
//! is its first position and positions never repeat.
//!
//! Recovery reads every retained segment. After an unclean shutdown, a
//! frame that fails its checksum or does not decode at the end of the last
//! segment, with no valid frame after it, is a torn write: it is truncated
//! away with a warning. The same anywhere else, or anywhere after a clean
//! shutdown (which synced everything before marking itself), is corruption
//! and stops the open ([`Error::Corruption`]): serving data with a hole in
//! its history would be worse than not serving. So are segments that leave
//! a gap, a log that ends before the checkpoint position or starts after
//! it, and bounds other than those a clean shutdown recorded. Once these
//! checks pass after an unclean shutdown, the last segment's valid bytes
//! are rewritten into a fresh file (fsynced, renamed over it, directory
//! fsynced; a torn tail dropped), since what was read may sit only in the
//! page cache (`rewrite_segment`).
//!
//! Every file operation goes through the engine's [`Vfs`]. Any failed
//! fsync of a segment or of the log directory poisons the group commit
//! before another fsync can return (see `Log::sync_lock`).
//!
//! An in-memory index maps every retained delta's dot to its position, so
//! "everything after version vector V" (catch-up) reads only what the peer
//! lacks. Truncation deletes whole segments from the front once they are
//! checkpointed and every replica has their deltas; the join of what was
//! deleted is kept ([`Log::truncated`]) so a peer that still needs deleted
//! deltas is told to take a full-state sync instead.

pub(crate) mod group;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::causal::{CausalContext, Dot, StreamId, VersionVector};
use crate::clock::Hlc;
use crate::codec::{self, DecodeError};
use crate::crdt::Delta;
use crate::error::{Error, Result};
use crate::object::{GroupFn, GroupId, ObjectKey};
use crate::vfs::{Vfs, VfsFile};
use group::GroupCommit;

/// Frame header: length and checksum.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Largest payload of one log frame, in bytes. A length prefix above this
/// is treated as damage, never allocated. An entry larger than one frame
/// (a full-state join or re-issue of a set past the per-write limit) is
/// written as a multi-part entry (see [`PART_BYTES`]).
pub const MAX_ENTRY_BYTES: usize = 24 << 20;

/// Payload bytes of an entry carried by one part frame of a multi-part
/// entry. Part frames are `[PART_TAG][index: u32 LE][count: u32 LE][chunk]`
/// payloads; the chunks of an entry's `[format version][archive]`
/// encoding, in order, contiguous in one segment and written by one
/// append, replay as that entry at the first part's position once all are
/// read (recovery never applies part of an entry).
pub const PART_BYTES: usize = 8 << 20;

/// Largest encoded entry, in bytes, whole or in parts: the largest set a
/// merge may make ([`crate::MAX_MERGED_OBJECT_BYTES`], as its cost
/// estimate counts members) plus room for its causal context, key and
/// the record around it.
pub const MAX_LOGGED_ENTRY_BYTES: usize = crate::object::MAX_MERGED_OBJECT_BYTES + (16 << 20);

/// First payload byte of a part frame. Larger than any format version, so
/// a build that predates multi-part entries stops with
/// `UnsupportedFormat` instead of misreading one.
const PART_TAG: u8 = 0xff;

/// Part frame payload header: tag, index, count.
const PART_HEADER_BYTES: usize = 9;

/// Most parts of one entry.
const MAX_PARTS: usize = MAX_LOGGED_ENTRY_BYTES.div_ceil(PART_BYTES);

const _: () = assert!(PART_BYTES + PART_HEADER_BYTES <= MAX_ENTRY_BYTES);
const _: () = assert!(crate::codec::FORMAT_VERSION < PART_TAG);

/// Default segment size, in bytes. Truncation deletes whole segments, so
/// this is the granularity of log space reclamation; 64 MiB keeps the file
/// count small while letting a quiet cluster shed its log promptly.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// How far past a damaged frame recovery looks for a valid one before
/// deciding the damage is a torn tail, in bytes. A torn write damages at
/// most the last write (one batch of frames, or the parts of one
/// multi-part entry); this covers the largest.
const TORN_TAIL_SCAN_BYTES: usize = MAX_LOGGED_ENTRY_BYTES + (MAX_PARTS + 1) * 64;

/// One replicated delta: the unit of the log, of realtime push and of
/// catch-up.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Record {
    /// `(origin stream, sequence number)`: unique cluster-wide.
    pub dot: Dot,
    /// The origin's HLC when the delta was made.
    pub hlc: Hlc,
    pub key: ObjectKey,
    pub delta: Delta,
}

impl Record {
    /// `[format version][archive]`, as sent between peers.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Validates and decodes bytes from [`Record::encode`] (e.g. from a peer).
    pub fn decode(bytes: &[u8]) -> std::result::Result<Record, DecodeError> {
        let record: Record = codec::decode(bytes)?;
        record
            .key
            .validate()
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !record.delta.fits(record.key.kind()) {
            return Err(DecodeError::Malformed(format!(
                "{} delta for a {} key",
                record.delta.what(),
                record.key.kind()
            )));
        }
        if record.dot.counter == 0 || record.dot.stream.0 == 0 {
            return Err(DecodeError::Malformed("zero dot".into()));
        }
        Ok(record)
    }
}

/// One log entry.
#[derive(Clone, PartialEq, Eq, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Entry {
    /// A replicated delta (originated here or received).
    Delta(Record),
    /// A local-only join of a full state (read repair, full-state sync):
    /// logged for durability, never replicated.
    Merge { key: ObjectKey, delta: Delta },
    /// After a full-state sync: the applied vector joins this.
    Vector(VersionVector),
}

/// Appends one frame holding `payload` to `out`.
fn push_frame(out: &mut Vec<u8>, payload: &[&[u8]]) {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    assert!(len <= MAX_ENTRY_BYTES, "a log frame over the frame cap");
    let mut crc = crc32fast::Hasher::new();
    for p in payload {
        crc.update(p);
    }
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    for p in payload {
        out.extend_from_slice(p);
    }
}

/// Encodes one entry: one frame, or the part frames of a multi-part entry
/// if its encoding exceeds [`MAX_ENTRY_BYTES`]. An entry over
/// [`MAX_LOGGED_ENTRY_BYTES`] is refused.
pub(crate) fn frames(entry: &Entry) -> Result<Vec<u8>> {
    let payload = codec::encode(entry);
    if payload.len() > MAX_LOGGED_ENTRY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "log entry of {} bytes exceeds the {MAX_LOGGED_ENTRY_BYTES}-byte limit",
            payload.len()
        )));
    }
    let mut out = Vec::with_capacity(payload.len() + FRAME_HEADER_BYTES);
    if payload.len() <= MAX_ENTRY_BYTES {
        push_frame(&mut out, &[payload.as_slice()]);
        return Ok(out);
    }
    let count = payload.len().div_ceil(PART_BYTES);
    debug_assert!((2..=MAX_PARTS).contains(&count));
    for (index, chunk) in payload.chunks(PART_BYTES).enumerate() {
        let mut header = [0u8; PART_HEADER_BYTES];
        header[0] = PART_TAG;
        header[1..5].copy_from_slice(&(index as u32).to_le_bytes());
        header[5..9].copy_from_slice(&(count as u32).to_le_bytes());
        push_frame(&mut out, &[&header[..], chunk]);
    }
    Ok(out)
}

/// One frame's content.
enum Frame {
    Entry(Entry),
    /// Part `index` of `count` of a multi-part entry.
    Part {
        index: u32,
        count: u32,
        chunk: Vec<u8>,
    },
}

/// Reassembles a multi-part entry from its part frames, in order; bounded
/// by [`MAX_LOGGED_ENTRY_BYTES`].
#[derive(Default)]
struct Assembly {
    /// Position of the first part (the entry's position), while assembling.
    start: Option<u64>,
    count: u32,
    next: u32,
    buf: Vec<u8>,
}

impl Assembly {
    fn in_progress(&self) -> bool {
        self.start.is_some()
    }

    /// Takes the frame at `pos`; returns a complete entry and its position.
    fn take(
        &mut self,
        pos: u64,
        frame: Frame,
    ) -> std::result::Result<Option<(u64, Entry)>, String> {
        let (index, count, chunk) = match frame {
            Frame::Entry(e) if !self.in_progress() => return Ok(Some((pos, e))),
            Frame::Entry(_) => return Err("a multi-part entry is interrupted by an entry".into()),
            Frame::Part {
                index,
                count,
                chunk,
            } => (index, count, chunk),
        };
        if index == 0 {
            if self.in_progress() {
                return Err("a multi-part entry is interrupted by another".into());
            }
            if count < 2 || count as usize > MAX_PARTS {
                return Err(format!("a multi-part entry of {count} parts"));
            }
            *self = Assembly {
                start: Some(pos),
                count,
                next: 0,
                buf: Vec::new(),
            };
        } else if !self.in_progress() || index != self.next || count != self.count {
            return Err(format!("part {index} of {count} out of order"));
        }
        if self.buf.len() + chunk.len() > MAX_LOGGED_ENTRY_BYTES {
            return Err("a multi-part entry over the entry bound".into());
        }
        self.buf.extend_from_slice(&chunk);
        self.next += 1;
        if self.next < self.count {
            return Ok(None);
        }
        let start = self.start.take().expect("in progress");
        let buf = std::mem::take(&mut self.buf);
        let entry: Entry = codec::decode(&buf).map_err(|e| format!("multi-part entry: {e:?}"))?;
        Ok(Some((start, entry)))
    }
}

/// Parses the frame at the start of `buf`: `Ok(Some((frame, frame_len)))`,
/// `Ok(None)` if `buf` is too short to hold it, or the decode failure.
fn parse_frame(buf: &[u8]) -> std::result::Result<Option<(Frame, usize)>, DecodeError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len == 0 || len > MAX_ENTRY_BYTES {
        return Err(DecodeError::Malformed(format!("frame length {len}")));
    }
    if buf.len() < FRAME_HEADER_BYTES + len {
        return Ok(None);
    }
    let payload = &buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
    if crc32fast::hash(payload) != crc {
        return Err(DecodeError::Malformed("checksum mismatch".into()));
    }
    if payload[0] == PART_TAG {
        if payload.len() <= PART_HEADER_BYTES {
            return Err(DecodeError::Malformed("empty part frame".into()));
        }
        let index = u32::from_le_bytes(payload[1..5].try_into().unwrap());
        let count = u32::from_le_bytes(payload[5..9].try_into().unwrap());
        let chunk = payload[PART_HEADER_BYTES..].to_vec();
        return Ok(Some((
            Frame::Part {
                index,
                count,
                chunk,
            },
            FRAME_HEADER_BYTES + len,
        )));
    }
    let entry: Entry = codec::decode(payload)?;
    Ok(Some((Frame::Entry(entry), FRAME_HEADER_BYTES + len)))
}

/// What recovery and truncation need to know about one segment.
struct Segment {
    start: u64,
    end: u64,
    path: PathBuf,
    file: Arc<dyn VfsFile>,
    /// Highest counter per origin among the segment's deltas, per group.
    maxes: BTreeMap<GroupId, VersionVector>,
    /// The segment's deltas' dots (to drop them from the index on truncation).
    dots: Vec<Dot>,
}

struct Writer {
    file: Arc<dyn VfsFile>,
    path: PathBuf,
    end: u64,
    /// Set after a failed write whose damage could not be undone.
    broken: Option<String>,
    /// Set by [`Log::seal`]: the engine is closing and its last sync may
    /// already have run, so nothing more may be appended.
    sealed: bool,
}

/// Everything recovery found.
pub(crate) struct Recovered {
    pub(crate) log: Log,
    /// Whether a torn tail was cut off.
    pub(crate) truncated_tail: bool,
}

/// How to open the log.
pub(crate) struct LogOptions {
    pub(crate) vfs: Arc<dyn Vfs>,
    pub(crate) dir: PathBuf,
    pub(crate) segment_bytes: u64,
    pub(crate) group_of: GroupFn,
    /// Per group, the deltas truncation deleted (from the checkpoint).
    pub(crate) truncated: BTreeMap<GroupId, VersionVector>,
    /// Replay starts here (the checkpoint position): the log must start at
    /// or before it and reach it.
    pub(crate) replay_from: u64,
    /// After a clean shutdown: the log must end undamaged, so damage at the
    /// end is corruption, not a torn write.
    pub(crate) clean: bool,
    /// The `(start, end)` positions a clean shutdown recorded, if known:
    /// the retained log must span exactly that.
    pub(crate) clean_bounds: Option<(u64, u64)>,
}

pub(crate) struct Log {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    segment_bytes: u64,
    /// Serializes fsyncs of log files with the poisoning after a failure:
    /// Linux reports a writeback error to only one of two concurrent
    /// fsyncs of the same open file, so the one that sees it must have
    /// poisoned the log before the other can return and release waiters.
    sync_lock: Mutex<()>,
    writer: Mutex<Writer>,
    segments: Mutex<Vec<Segment>>,
    /// Every retained delta: dot → (position, group).
    index: Mutex<BTreeMap<Dot, (u64, GroupId)>>,
    /// Per group, the join of the deltas truncation deleted.
    truncated: Mutex<BTreeMap<GroupId, VersionVector>>,
    group_of: GroupFn,
    pub(crate) group: Arc<GroupCommit>,
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.seg"))
}

/// Replaces the segment at `path` with a fresh file holding `bytes`, made
/// durable before it takes the segment's name: write a temporary file
/// (`<start>.seg.rewrite`, which recovery ignores and the next rewrite
/// removes), fsync it, rename it over the segment, fsync the directory.
/// A crash at any step leaves the old segment or the new one, both holding
/// `bytes`. Returns the new file, opened for appends.
///
/// A fresh file has no pages a failed writeback dropped, so its fsync
/// writes every byte; the directory fsync also makes the segment's name
/// durable if the last run failed to (a failed directory fsync after a
/// roll). Needs the segment's size in free space: on a full disk the open
/// fails with [`Error::Io`] (the temporary file removed) and changes
/// nothing.
fn rewrite_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<Arc<dyn VfsFile>> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".rewrite");
    let tmp = PathBuf::from(tmp);
    // A leftover of a rewrite cut short is removed, not reused: a file
    // whose fsync failed may hold dropped pages.
    match vfs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&tmp, e)),
    }
    let written = vfs.open(&tmp, true).and_then(|file| {
        file.append(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = vfs.remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    vfs.rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    vfs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    vfs.open(path, false).map_err(|e| Error::io(path, e))
}

impl Log {
    /// Opens (or creates) the log, calling `replay(position, entry)` for
    /// every entry at or after `opts.replay_from`, in order.
    ///
    /// Refuses ([`Error::Corruption`]) a log that cannot hold what the
    /// checkpoint and the clean-shutdown marker say it holds: segments
    /// that start after the checkpoint position or leave a gap, a log that
    /// ends before it, and after a clean shutdown any damage at the end or
    /// an end other than the recorded one (a missing or cut last segment).
    /// Nothing on disk changes before those checks pass.
    pub(crate) fn open(
        opts: LogOptions,
        mut replay: impl FnMut(u64, Entry) -> Result<()>,
    ) -> Result<Recovered> {
        let LogOptions {
            vfs,
            dir,
            segment_bytes,
            group_of,
            truncated,
            replay_from,
            clean,
            clean_bounds,
        } = opts;
        let dir = dir.as_path();
        vfs.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut starts: Vec<u64> = Vec::new();
        for name in vfs.read_dir(dir).map_err(|e| Error::io(dir, e))? {
            if let Some(stem) = name.strip_suffix(".seg") {
                match stem.parse::<u64>() {
                    Ok(start) => starts.push(start),
                    Err(_) => {
                        return Err(Error::corruption(
                            dir.join(&name),
                            "unexpected file in the log directory",
                        ));
                    }
                }
            }
        }
        starts.sort_unstable();
        if let Some(&first) = starts.first() {
            // Truncation deletes segments only below the checkpoint
            // position; a clean shutdown recorded where the log started.
            let expected = clean_bounds.map(|(start, _)| start);
            if first > replay_from || expected.is_some_and(|e| e != first) {
                return Err(Error::corruption(
                    segment_path(dir, first),
                    format!(
                        "the log starts at {first}, but the checkpoint is at {replay_from} \
                         and the log should start {}: a segment is missing",
                        expected.map_or("at or before it".to_string(), |e| format!("at {e}"))
                    ),
                ));
            }
        }

        let mut segments = Vec::new();
        let mut index = BTreeMap::new();
        // Where a torn tail starts in the last segment, if there is one.
        let mut torn_at: Option<usize> = None;
        // The last segment's bytes as read (rewritten after an unclean
        // shutdown, see below).
        let mut last_bytes: Vec<u8> = Vec::new();
        let count = starts.len();
        for (i, &start) in starts.iter().enumerate() {
            let path = segment_path(dir, start);
            if let Some(prev) = segments.last() {
                let prev: &Segment = prev;
                if prev.end != start {
                    return Err(Error::corruption(
                        &path,
                        format!(
                            "segment starts at {start} but the previous one ends at {}",
                            prev.end
                        ),
                    ));
                }
            }
            let last = i + 1 == count;
            let bytes = vfs.read(&path).map_err(|e| Error::io(&path, e))?;
            let mut seg = Segment {
                start,
                end: start,
                path: path.clone(),
                file: vfs.open(&path, false).map_err(|e| Error::io(&path, e))?,
                maxes: BTreeMap::new(),
                dots: Vec::new(),
            };
            // A damaged end is a torn write only if the last shutdown was not
            // clean: a clean one synced everything before marking itself.
            let may_tear = last && !clean;
            let mut offset = 0usize;
            let mut assembly = Assembly::default();
            while offset < bytes.len() {
                match parse_frame(&bytes[offset..]) {
                    Ok(Some((frame, len))) => {
                        let at = start + offset as u64;
                        let taken = assembly.take(at, frame).map_err(|detail| {
                            Error::corruption(&path, format!("at offset {offset}: {detail}"))
                        })?;
                        offset += len;
                        let Some((pos, entry)) = taken else {
                            continue;
                        };
                        if let Entry::Delta(r) = &entry {
                            let g = group_of(&r.key);
                            seg.maxes
                                .entry(g)
                                .or_default()
                                .raise(r.dot.stream, r.dot.counter);
                            seg.dots.push(r.dot);
                            index.entry(r.dot).or_insert((pos, g));
                        }
                        if pos >= replay_from {
                            replay(pos, entry)?;
                        }
                    }
                    // A frame that claims to run past the end is torn only if
                    // nothing valid follows it: a damaged length field in
                    // the middle must not cut off the records after it.
                    Ok(None) if may_tear && !valid_frame_after(&bytes, offset) => {
                        tracing::warn!(
                            path = %path.display(), offset,
                            "log ends in a partial frame (torn write); truncating it"
                        );
                        torn_at = Some(offset);
                        break;
                    }
                    Ok(None) => {
                        return Err(Error::corruption(
                            &path,
                            format!(
                                "frame at offset {offset} runs past the end of the segment \
                                 with valid frames after it, in a non-final segment, or \
                                 after a clean shutdown"
                            ),
                        ));
                    }
                    Err(DecodeError::Unsupported(v)) => {
                        return Err(Error::UnsupportedFormat {
                            what: "log entry",
                            found: v,
                            supported: codec::FORMAT_VERSION,
                        });
                    }
                    Err(DecodeError::Malformed(detail)) => {
                        if may_tear && !valid_frame_after(&bytes, offset) {
                            tracing::warn!(
                                path = %path.display(), offset, %detail,
                                "damaged frame at the end of the log (torn write); truncating it"
                            );
                            torn_at = Some(offset);
                            break;
                        }
                        return Err(Error::corruption(
                            &path,
                            format!(
                                "damaged frame at offset {offset} ({detail}) followed by valid \
                                 frames, in a non-final segment, or after a clean shutdown"
                            ),
                        ));
                    }
                }
            }
            // A multi-part entry is written by one append: one cut short
            // at the end of the log is a torn write as a whole.
            if let Some(first) = assembly.start {
                if !may_tear {
                    return Err(Error::corruption(
                        &path,
                        format!(
                            "the segment ends inside the multi-part entry at {first}, in a \
                             non-final segment or after a clean shutdown"
                        ),
                    ));
                }
                tracing::warn!(
                    path = %path.display(), position = first,
                    "log ends in an incomplete multi-part entry (torn write); truncating it"
                );
                offset = (first - start) as usize;
                torn_at = Some(offset);
            }
            seg.end = start + offset as u64;
            segments.push(seg);
            if last {
                last_bytes = bytes;
            }
        }

        let end = segments.last().map_or(replay_from, |s| s.end);
        if segments.is_empty() && replay_from > 0 {
            return Err(Error::corruption(
                dir,
                format!("the log has no segments but the checkpoint is at {replay_from}"),
            ));
        }
        if end < replay_from {
            return Err(Error::corruption(
                dir,
                format!(
                    "the log ends at {end}, before the checkpoint position {replay_from}: \
                     a segment is missing or was cut"
                ),
            ));
        }
        if let Some((_, clean_end)) = clean_bounds
            && clean_end != end
        {
            return Err(Error::corruption(
                dir,
                format!(
                    "the log ends at {end} but the clean shutdown recorded {clean_end}: \
                     a segment is missing or was cut"
                ),
            ));
        }

        // Checks passed: now the log may change.
        if !clean && let Some(seg) = segments.last_mut() {
            // After an unclean shutdown the bytes just read may come from
            // the page cache and not be on disk: a failed fsync (which
            // stopped the last run) drops the dirty pages from writeback
            // without dropping them from the cache, and no later fsync of
            // that file writes them (fsyncgate). Only the last segment can
            // hold such pages: every other one was fsynced in full when it
            // was closed, and a failed fsync poisons the log before it can
            // be closed. So write the last segment's valid bytes (a torn
            // tail cut off) to a fresh file, fsync it, and rename it over
            // the old one, making it durable from what was read. See
            // `rewrite_segment`.
            let valid = (seg.end - seg.start) as usize;
            seg.file = rewrite_segment(&*vfs, dir, &seg.path, &last_bytes[..valid])?;
        }
        drop(last_bytes);
        if segments.is_empty() {
            // A fresh log starts where the truncated history ended (0 for a
            // new node).
            let start = replay_from;
            let path = segment_path(dir, start);
            let file = vfs.open(&path, true).map_err(|e| Error::io(&path, e))?;
            vfs.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
            segments.push(Segment {
                start,
                end: start,
                path,
                file,
                maxes: BTreeMap::new(),
                dots: Vec::new(),
            });
        }
        let tail = segments.last().expect("at least one segment");
        let end = tail.end;
        let writer = Writer {
            file: tail.file.clone(),
            path: tail.path.clone(),
            end,
            broken: None,
            sealed: false,
        };
        Ok(Recovered {
            log: Log {
                vfs,
                dir: dir.to_path_buf(),
                segment_bytes,
                sync_lock: Mutex::new(()),
                writer: Mutex::new(writer),
                segments: Mutex::new(segments),
                index: Mutex::new(index),
                truncated: Mutex::new(truncated),
                group_of,
                group: Arc::new(GroupCommit::new(end)),
            },
            truncated_tail: torn_at.is_some(),
        })
    }

    /// After a failed fsync of a log file or directory: poison (every
    /// waiter fails, no later sync releases anyone) and say so.
    fn poison_io(&self, path: &Path, what: &str, e: std::io::Error) -> Error {
        let reason = format!("{what} of {} failed: {e}", path.display());
        tracing::error!(path = %path.display(), error = %e, "{what} failed; refusing further writes");
        self.group.poison(reason.clone());
        Error::Poisoned(reason)
    }

    /// fdatasyncs one log file; a failure poisons the log.
    fn sync_file(&self, file: &dyn VfsFile, path: &Path) -> Result<()> {
        let _g = self.sync_lock.lock();
        file.sync_data()
            .map_err(|e| self.poison_io(path, "fdatasync", e))
    }

    /// fsyncs the log directory; a failure poisons the log (a segment's
    /// name may not be durable, and records in it with it).
    fn sync_log_dir(&self) -> Result<()> {
        let _g = self.sync_lock.lock();
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|e| self.poison_io(&self.dir, "directory fsync", e))
    }

    /// Refuses every later append ([`Error::Shutdown`]). Whatever was
    /// appended before is reported to the group commit, so a sync after
    /// this covers the whole log.
    pub(crate) fn seal(&self) {
        self.writer.lock().sealed = true;
    }

    /// Appends one entry; returns its `(start, end)` positions. The entry is
    /// handed to the OS (it survives a process crash) but is durable only
    /// once the group commit has synced past `end`.
    pub(crate) fn append(&self, entry: &Entry) -> Result<(u64, u64)> {
        let bytes = frames(entry)?;
        self.group.check().map_err(Error::Poisoned)?;
        let mut w = self.writer.lock();
        if w.sealed {
            return Err(Error::Shutdown);
        }
        if let Some(reason) = &w.broken {
            return Err(Error::Poisoned(reason.clone()));
        }
        self.maybe_roll(&mut w, bytes.len() as u64)?;
        let start = w.end;
        if let Err(e) = w.file.append(&bytes) {
            // Undo a partial write (a full disk) so later frames don't
            // follow garbage; then nothing has changed.
            let seg_start = self.segments.lock().last().unwrap().start;
            if let Err(undo) = w.file.set_len(start - seg_start) {
                w.broken = Some(format!(
                    "log write failed ({e}) and could not be undone ({undo})"
                ));
            }
            return Err(Error::io(&w.path, e));
        }
        let end = start + bytes.len() as u64;
        w.end = end;
        {
            let mut segs = self.segments.lock();
            let seg = segs.last_mut().unwrap();
            seg.end = end;
            if let Entry::Delta(r) = entry {
                let g = (self.group_of)(&r.key);
                seg.maxes
                    .entry(g)
                    .or_default()
                    .raise(r.dot.stream, r.dot.counter);
                seg.dots.push(r.dot);
                self.index.lock().entry(r.dot).or_insert((start, g));
            }
        }
        self.group.written(end);
        Ok((start, end))
    }

    /// Starts a new segment if the current one would exceed its size.
    fn maybe_roll(&self, w: &mut Writer, incoming: u64) -> Result<()> {
        let mut segs = self.segments.lock();
        let cur = segs.last().unwrap();
        if cur.end == cur.start || (cur.end - cur.start) + incoming <= self.segment_bytes {
            return Ok(());
        }
        // Everything in the old segment must be durable before a sync of
        // the new one can vouch for later positions. A failure poisons:
        // the syncer's next fsync of this file could succeed without
        // writing the pages this one failed to.
        self.sync_file(&*cur.file, &cur.path)?;
        let start = cur.end;
        let path = segment_path(&self.dir, start);
        // A full disk here changes nothing (an empty file may be left,
        // which the next roll reuses).
        let file = self
            .vfs
            .open(&path, true)
            .map_err(|e| Error::io(&path, e))?;
        self.sync_log_dir()?;
        segs.push(Segment {
            start,
            end: start,
            path: path.clone(),
            file: file.clone(),
            maxes: BTreeMap::new(),
            dots: Vec::new(),
        });
        w.file = file;
        w.path = path;
        Ok(())
    }

    /// Makes everything below `target` durable (called by the syncer). A
    /// failure poisons the log before it returns.
    pub(crate) fn sync_to(&self, _target: u64) -> std::io::Result<()> {
        // Older segments were synced when they were closed, so syncing the
        // current file covers every position written so far.
        let (file, path) = {
            let w = self.writer.lock();
            (w.file.clone(), w.path.clone())
        };
        self.sync_file(&*file, &path)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Position after the last entry.
    pub(crate) fn end(&self) -> u64 {
        self.writer.lock().end
    }

    /// Reads the entry at `pos` (reassembling a multi-part entry).
    pub(crate) fn read_at(&self, pos: u64) -> Result<Entry> {
        let (file, path, seg_start, seg_end) = {
            let segs = self.segments.lock();
            let i = segs.partition_point(|s| s.start <= pos);
            if i == 0 {
                return Err(Error::InvalidArgument(format!(
                    "log position {pos} was truncated"
                )));
            }
            let s = &segs[i - 1];
            (s.file.clone(), s.path.clone(), s.start, s.end)
        };
        let mut assembly = Assembly::default();
        let mut at = pos;
        loop {
            let rel = at - seg_start;
            let mut header = [0u8; FRAME_HEADER_BYTES];
            file.read_exact_at(&mut header, rel)
                .map_err(|e| Error::io(&path, e))?;
            let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
            if len > MAX_ENTRY_BYTES || at + (FRAME_HEADER_BYTES + len) as u64 > seg_end {
                return Err(Error::corruption(
                    &path,
                    format!("bad frame length at {at}"),
                ));
            }
            let mut buf = vec![0u8; FRAME_HEADER_BYTES + len];
            buf[..FRAME_HEADER_BYTES].copy_from_slice(&header);
            file.read_exact_at(
                &mut buf[FRAME_HEADER_BYTES..],
                rel + FRAME_HEADER_BYTES as u64,
            )
            .map_err(|e| Error::io(&path, e))?;
            let frame = match parse_frame(&buf) {
                Ok(Some((frame, _))) => frame,
                Ok(None) => return Err(Error::corruption(&path, format!("short frame at {at}"))),
                Err(e) => return Err(e.into_error("log entry", &path)),
            };
            if let Some((_, entry)) = assembly
                .take(pos, frame)
                .map_err(|detail| Error::corruption(&path, format!("at {at}: {detail}")))?
            {
                return Ok(entry);
            }
            at += buf.len() as u64;
        }
    }

    /// Deltas of the groups `wants` admits whose dots `have` lacks, oldest
    /// counters first per origin, up to `max_records` records or about
    /// `max_bytes` of deltas. `Ok(None)` if some of them were already
    /// truncated: the peer needs a full-state sync.
    pub(crate) fn deltas_since(
        &self,
        have: &CausalContext,
        wants: &dyn Fn(GroupId) -> bool,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<Since>> {
        {
            let truncated = self.truncated.lock();
            for (&g, vv) in truncated.iter() {
                if wants(g) && vv.iter().any(|(stream, c)| have.vector().get(stream) < c) {
                    return Ok(None);
                }
            }
        }
        let mut positions: Vec<u64> = Vec::new();
        let mut more = false;
        {
            let index = self.index.lock();
            let mut cursor = Dot::new(StreamId(0), 0);
            while let Some((&first, _)) = index.range(cursor..).next() {
                let stream = first.stream;
                let from = Dot::new(stream, have.vector().get(stream) + 1);
                let to = Dot::new(stream, u64::MAX);
                for (&dot, &(pos, g)) in index.range(from..=to) {
                    if have.contains(dot) || !wants(g) {
                        continue;
                    }
                    if positions.len() == max_records {
                        more = true;
                        break;
                    }
                    positions.push(pos);
                }
                if more || stream.0 == u64::MAX {
                    break;
                }
                cursor = Dot::new(StreamId(stream.0 + 1), 0);
            }
        }
        let mut records = Vec::new();
        let mut bytes = 0usize;
        for pos in positions {
            if let Entry::Delta(r) = self.read_at(pos)? {
                let size = estimate_bytes(&r);
                if !records.is_empty() && bytes + size > max_bytes {
                    more = true;
                    break;
                }
                bytes += size;
                records.push(r);
            }
        }
        Ok(Some(Since { records, more }))
    }

    /// Plans a truncation: how many whole segments from the front lie below
    /// `checkpoint` with every delta covered by `stable(group)`, and the
    /// truncated vectors once they are gone. Nothing is deleted yet: the
    /// caller persists the new vectors first ([`Log::drop_front`]).
    pub(crate) fn plan_truncation(
        &self,
        checkpoint: u64,
        stable: &dyn Fn(GroupId) -> VersionVector,
    ) -> (usize, BTreeMap<GroupId, VersionVector>) {
        let segs = self.segments.lock();
        let mut truncated = self.truncated.lock().clone();
        let mut count = 0;
        // The last segment is the one being written: never deleted.
        for seg in &segs[..segs.len() - 1] {
            let covered = seg
                .maxes
                .iter()
                .all(|(&g, maxes)| stable(g).dominates(maxes));
            if seg.end > checkpoint || !covered {
                break;
            }
            for (&g, maxes) in &seg.maxes {
                truncated.entry(g).or_default().join(maxes);
            }
            count += 1;
        }
        (count, truncated)
    }

    /// Deletes the first `count` segments (as planned); returns the bytes
    /// reclaimed.
    pub(crate) fn drop_front(
        &self,
        count: usize,
        truncated: BTreeMap<GroupId, VersionVector>,
    ) -> Result<u64> {
        if count == 0 {
            return Ok(0);
        }
        let removed: Vec<Segment> = {
            let mut segs = self.segments.lock();
            let count = count.min(segs.len() - 1);
            segs.drain(..count).collect()
        };
        {
            let mut index = self.index.lock();
            for seg in &removed {
                for dot in &seg.dots {
                    index.remove(dot);
                }
            }
        }
        *self.truncated.lock() = truncated;
        let mut reclaimed = 0;
        // One at a time, front first, each removal durable before the next:
        // a crash part way leaves the retained segments contiguous.
        for seg in &removed {
            self.vfs
                .remove_file(&seg.path)
                .map_err(|e| Error::io(&seg.path, e))?;
            self.sync_log_dir()?;
            reclaimed += seg.end - seg.start;
            tracing::debug!(path = %seg.path.display(), "truncated log segment");
        }
        Ok(reclaimed)
    }

    /// Per group, the join of the deltas truncation deleted.
    pub(crate) fn truncated(&self) -> BTreeMap<GroupId, VersionVector> {
        self.truncated.lock().clone()
    }

    /// Bytes of retained log.
    pub(crate) fn retained_bytes(&self) -> u64 {
        let segs = self.segments.lock();
        segs.last().unwrap().end - segs[0].start
    }

    /// Number of retained deltas.
    pub(crate) fn retained_deltas(&self) -> usize {
        self.index.lock().len()
    }

    /// Position of the first retained entry.
    pub(crate) fn start(&self) -> u64 {
        self.segments.lock()[0].start
    }
}

/// A batch of deltas for a peer.
#[derive(Debug, Default)]
pub struct Since {
    pub records: Vec<Record>,
    /// More remain beyond the limits.
    pub more: bool,
}

/// Rough encoded size of a record, for batching limits.
pub(crate) fn estimate_bytes(r: &Record) -> usize {
    use crate::crdt::Delta;
    64 + r.key.key().len()
        + match &r.delta {
            Delta::Counter(c) => 24 * c.origins() * 2,
            Delta::Set(s) => {
                s.entries
                    .iter()
                    .map(|(m, d)| m.len() + 16 * d.len() + 8)
                    .sum::<usize>()
                    + 16 * s.context.entries()
            }
            Delta::Register(r) => r.value.as_ref().map_or(0, Vec::len),
            Delta::Expiry(e) => 24 * e.deadlines().len() + 16 * e.context().entries() + 8,
            Delta::Map(m) => m.estimated_bytes(),
        }
}

/// Whether any valid frame that starts an entry (a whole entry or a
/// multi-part entry's first part) starts after the damaged one at
/// `offset`. Later parts of a multi-part entry do not count: they belong
/// to the write the damage tore.
fn valid_frame_after(bytes: &[u8], offset: usize) -> bool {
    let limit = bytes.len().min(offset + TORN_TAIL_SCAN_BYTES);
    (offset + 1..limit).any(|o| {
        matches!(
            parse_frame(&bytes[o..]),
            Ok(Some((Frame::Entry(_) | Frame::Part { index: 0, .. }, _)))
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::Incarnation;
    use crate::crdt::Counter;
    use crate::object::Kind;

    fn record(node: u64, counter: u64) -> Entry {
        let mut c = Counter::new();
        let delta = c.incr(Incarnation(node), 1).unwrap();
        Entry::Delta(Record {
            dot: Dot::new(StreamId(node), counter),
            hlc: Hlc::default(),
            key: ObjectKey::new(Kind::Counter, format!("k{counter}")).unwrap(),
            delta: Delta::Counter(delta),
        })
    }

    fn options(vfs: Arc<dyn Vfs>, dir: &Path, seg: u64) -> LogOptions {
        LogOptions {
            vfs,
            dir: dir.to_path_buf(),
            segment_bytes: seg,
            group_of: Arc::new(|_| GroupId(0)),
            truncated: BTreeMap::new(),
            replay_from: 0,
            clean: false,
            clean_bounds: None,
        }
    }

    fn open_opts(opts: LogOptions) -> Result<(Log, Vec<Entry>, bool)> {
        let mut seen = Vec::new();
        let r = Log::open(opts, |_, e| {
            seen.push(e);
            Ok(())
        })?;
        Ok((r.log, seen, r.truncated_tail))
    }

    fn open(dir: &Path, seg: u64) -> (Log, Vec<Entry>, bool) {
        open_opts(options(crate::vfs::StdFs::shared(), dir, seg)).unwrap()
    }

    #[test]
    fn append_reopen_replays_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(dir.path(), 300);
        let entries: Vec<Entry> = (1..=10).map(|i| record(1, i)).collect();
        for e in &entries {
            log.append(e).unwrap();
        }
        assert!(log.segments.lock().len() > 1);
        drop(log);
        let (log, seen, torn) = open(dir.path(), 300);
        assert!(!torn);
        assert_eq!(seen, entries);
        let since = log
            .deltas_since(
                &CausalContext::from_vector([(StreamId(1), 7)].into_iter().collect()),
                &|_| true,
                100,
                usize::MAX,
            )
            .unwrap()
            .unwrap();
        let got: Vec<u64> = since.records.iter().map(|r| r.dot.counter).collect();
        assert_eq!(got, vec![8, 9, 10]);
    }

    #[test]
    fn torn_tail_is_truncated_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        log.append(&record(1, 1)).unwrap();
        log.append(&record(1, 2)).unwrap();
        let path = segment_path(dir.path(), 0);
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let damaged = std::fs::read(&path).unwrap();
        // After a clean shutdown the same damage is corruption, and the
        // failed open leaves the log as it was.
        let mut clean = options(
            crate::vfs::StdFs::shared(),
            dir.path(),
            DEFAULT_SEGMENT_BYTES,
        );
        clean.clean = true;
        assert!(matches!(open_opts(clean), Err(Error::Corruption { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), damaged);
        let (log, seen, torn) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        assert!(torn);
        assert_eq!(seen, vec![record(1, 1)]);
        log.append(&record(1, 3)).unwrap();
        drop(log);
        let (_, seen, torn) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        assert!(!torn);
        assert_eq!(seen, vec![record(1, 1), record(1, 3)]);
    }

    /// A register delta with a value of `bytes` bytes (a record of any size).
    fn big_record(counter: u64, bytes: usize) -> Entry {
        let reg = crate::crdt::Register::write(Hlc::default(), Some(vec![counter as u8; bytes]));
        Entry::Delta(Record {
            dot: Dot::new(StreamId(1), counter),
            hlc: Hlc::default(),
            key: ObjectKey::new(Kind::Register, format!("big{counter}")).unwrap(),
            delta: Delta::Register(reg),
        })
    }

    /// Review C4: an entry larger than one frame is written as parts,
    /// replayed whole at its first part's position, read back whole for a
    /// peer, and bounded by the logged-entry limit.
    #[test]
    fn entries_larger_than_a_frame_are_written_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        let big = big_record(2, MAX_ENTRY_BYTES + PART_BYTES + 5);
        let entries = vec![record(1, 1), big.clone(), record(1, 3)];
        let mut positions = Vec::new();
        for e in &entries {
            positions.push(log.append(e).unwrap());
        }
        let (start, end) = positions[1];
        assert!(end - start > MAX_ENTRY_BYTES as u64);
        assert_eq!(log.read_at(start).unwrap(), big);
        // A part past the first is not an entry of its own.
        let second = start + (FRAME_HEADER_BYTES + PART_HEADER_BYTES + PART_BYTES) as u64;
        assert!(matches!(log.read_at(second), Err(Error::Corruption { .. })));
        let since = log
            .deltas_since(&CausalContext::new(), &|_| true, 10, usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(since.records.len(), 3);
        assert_eq!(Entry::Delta(since.records[1].clone()), big);
        // Over the bound: refused, nothing written.
        let before = log.end();
        let huge = big_record(4, MAX_LOGGED_ENTRY_BYTES);
        assert!(matches!(log.append(&huge), Err(Error::InvalidArgument(_))));
        assert_eq!(log.end(), before);
        drop(log);
        let mut seen_at = Vec::new();
        let r = Log::open(
            options(
                crate::vfs::StdFs::shared(),
                dir.path(),
                DEFAULT_SEGMENT_BYTES,
            ),
            |pos, e| {
                seen_at.push((pos, e));
                Ok(())
            },
        )
        .unwrap();
        assert!(!r.truncated_tail);
        let expected: Vec<(u64, Entry)> = positions.iter().map(|p| p.0).zip(entries).collect();
        assert_eq!(seen_at, expected);
    }

    /// A multi-part entry cut short at the end of the log is a torn write
    /// as a whole after an unclean shutdown (none of it replays, the log
    /// ends before it), and corruption after a clean one.
    #[test]
    fn a_torn_multi_part_entry_is_cut_off_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        log.append(&record(1, 1)).unwrap();
        let (start, end) = log.append(&big_record(2, MAX_ENTRY_BYTES + 1)).unwrap();
        drop(log);
        let path = segment_path(dir.path(), 0);
        for cut in [
            // Inside the first part; at the boundary after it; inside the last.
            start + 100,
            start + (FRAME_HEADER_BYTES + PART_HEADER_BYTES + PART_BYTES) as u64,
            end - 10,
        ] {
            let copy = tempfile::tempdir().unwrap();
            let copied = segment_path(copy.path(), 0);
            std::fs::copy(&path, &copied).unwrap();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&copied)
                .unwrap();
            f.set_len(cut).unwrap();
            let mut clean = options(
                crate::vfs::StdFs::shared(),
                copy.path(),
                DEFAULT_SEGMENT_BYTES,
            );
            clean.clean = true;
            assert!(
                matches!(open_opts(clean), Err(Error::Corruption { .. })),
                "cut at {cut}"
            );
            let (log, seen, torn) = open(copy.path(), DEFAULT_SEGMENT_BYTES);
            assert!(torn, "cut at {cut}");
            assert_eq!(seen, vec![record(1, 1)], "cut at {cut}");
            assert_eq!(log.end(), start, "cut at {cut}");
        }
        // Damage in the middle of the entry with its later parts intact is
        // still the torn last write, not corruption.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[start as usize + 200] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (log, seen, torn) = open(dir.path(), DEFAULT_SEGMENT_BYTES);
        assert!(torn);
        assert_eq!(seen, vec![record(1, 1)]);
        assert_eq!(log.end(), start);
    }

    /// C3: the fdatasync that closes a segment fails. The syncer's next
    /// fdatasync of that same file would succeed (Linux reports the error
    /// once), so the failure itself must poison: no waiter for a record
    /// in the old segment is released, and appends are refused.
    #[test]
    fn a_failed_fsync_at_segment_roll_poisons_the_log() {
        use crate::vfs::{FailAction, FailOp, Failpoint, SimDisk, sim::EIO};
        let host = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(host.path());
        let dir = Path::new("/node/log");
        let (log, _, _) = open_opts(options(disk.mount(), dir, 200)).unwrap();
        let log = Arc::new(log);
        let syncer = {
            let log = log.clone();
            std::thread::spawn(move || {
                let sync_log = log.clone();
                log.group.run_syncer(|t| sync_log.sync_to(t), None)
            })
        };
        let (_, first_end) = log.append(&record(1, 1)).unwrap();
        disk.add_failpoint(Failpoint::new(
            FailOp::Sync,
            "00000000000000000000.seg",
            FailAction::Errno(EIO),
        ));
        let mut rolled = None;
        for i in 2..=20 {
            match log.append(&record(1, i)) {
                Ok(_) => continue,
                Err(e) => {
                    rolled = Some(e);
                    break;
                }
            }
        }
        let e = rolled.expect("a roll happened and its fsync failed");
        assert!(matches!(e, Error::Poisoned(_)), "{e:?}");
        assert_eq!(disk.armed_failpoints(), 0);
        // The file's next fsync would succeed: nobody may be released by it.
        assert!(log.group.wait(first_end).is_err());
        assert!(matches!(
            log.append(&record(1, 99)),
            Err(Error::Poisoned(_))
        ));
        log.group.shutdown();
        syncer.join().unwrap();
    }

    #[test]
    fn truncation_reports_what_peers_can_no_longer_catch_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(dir.path(), 200);
        for i in 1..=6 {
            log.append(&record(1, i)).unwrap();
        }
        let end = log.end();
        let stable: VersionVector = [(StreamId(1), 3)].into_iter().collect();
        let (count, truncated) = log.plan_truncation(end, &|_| stable.clone());
        assert!(count > 0);
        let reclaimed = log.drop_front(count, truncated).unwrap();
        assert!(reclaimed > 0);
        let t = log.truncated()[&GroupId(0)].clone();
        assert!(t.get(StreamId(1)) >= 1 && t.get(StreamId(1)) <= 3);
        assert!(
            log.deltas_since(&CausalContext::new(), &|_| true, 100, usize::MAX)
                .unwrap()
                .is_none(),
            "a peer with nothing needs a full sync"
        );
        assert!(
            log.deltas_since(&CausalContext::new(), &|g| g != GroupId(0), 100, usize::MAX)
                .unwrap()
                .is_some(),
            "a peer that doesn't replicate the group is not affected"
        );
        let caught_up = CausalContext::from_vector(stable);
        let since = log
            .deltas_since(&caught_up, &|_| true, 100, usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(since.records.len(), 3);
    }
}
