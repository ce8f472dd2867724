//! A log file followed like `tail -F`: read to the end, then again as it
//! grows; across a rotation by rename (the old file is read to its end,
//! then the new one from its start, and the old one is still read for
//! lines its writer appends late, until it has been quiet for
//! [`OLD_FILE_GRACE`] reads) and a truncation in place (read again from
//! the start). A line longer than [`MAX_READ`] is cut there and the rest
//! of it dropped, never read as a line of its own. The blocking reads run on tokio's blocking pool, never
//! on a runtime thread.
//!
//! Where to start: at the saved position when the file there is the one
//! saved (same device and inode, not shorter); a file rotated while the
//! server was down is found at `<path>.1` and read from the saved
//! position first. With nothing saved, a file present at start is read
//! from its end (its past is not replayed); a file that appears later
//! from its start.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use portcullis::sqlite::JailPosition;

/// Bytes read at most per step.
pub const MAX_READ: usize = 256 * 1024;

/// Complete lines read in one step, and the position just past them.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The lines, without their line ends.
    pub lines: Vec<String>,
    /// The file's device, inode, and the offset past the last line.
    pub at: (u64, u64, u64),
    /// More may be waiting (the read was full, or a rotation switched files).
    pub more: bool,
}

/// Reads of a renamed-away file that found nothing new before it is let
/// go: a writer keeps appending to the old file until it reopens its log
/// (logrotate's HUP), and those lines still count. At the jail's 200 ms
/// poll this is about 5 s of quiet.
pub const OLD_FILE_GRACE: u32 = 25;

/// The file `path` named before a rotation, still read for lines its
/// writer appends late.
struct Old {
    file: File,
    offset: u64,
    quiet: u32,
}

/// A followed file.
pub struct Tail {
    path: PathBuf,
    file: Option<File>,
    old: Option<Old>,
    /// The last read cut a line longer than [`MAX_READ`]: drop what follows
    /// up to its end instead of reading it as a line of its own.
    discard: bool,
    dev: u64,
    ino: u64,
    offset: u64,
    /// The file was there at start: with nothing saved, read from its end.
    first: bool,
    saved: Option<JailPosition>,
}

fn id_of(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

/// `<path>.1`, where logrotate and newsyslog put the previous file.
fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

impl Tail {
    /// Follow `path` from `saved` (see the module doc). Call it at start:
    /// whether the file is there now decides where an unsaved one is read
    /// from (one `stat`).
    pub fn new(path: PathBuf, saved: Option<JailPosition>) -> Tail {
        let first = path.exists();
        Tail {
            path,
            file: None,
            old: None,
            discard: false,
            dev: 0,
            ino: 0,
            offset: 0,
            first,
            saved,
        }
    }

    /// The saved file, at `path` or rotated to `<path>.1`.
    fn resume(&mut self, file: File, id: (u64, u64), len: u64, s: &JailPosition) -> File {
        if id == (s.device, s.inode) && s.offset <= len {
            self.offset = s.offset;
            return file;
        }
        let old = File::open(rotated(&self.path)).ok().and_then(|f| {
            let m = f.metadata().ok()?;
            (id_of(&m) == (s.device, s.inode) && s.offset <= m.len()).then_some(f)
        });
        match old {
            Some(f) => {
                (self.dev, self.ino, self.offset) = (s.device, s.inode, s.offset);
                f
            }
            None => {
                self.offset = 0;
                file
            }
        }
    }

    /// Open the file at `path`; false if there is none yet.
    fn open(&mut self) -> io::Result<bool> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.first = false;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let m = file.metadata()?;
        (self.dev, self.ino) = id_of(&m);
        let file = match self.saved.take() {
            Some(s) => self.resume(file, id_of(&m), m.len(), &s),
            None if self.first => {
                self.offset = m.len();
                file
            }
            None => {
                self.offset = 0;
                file
            }
        };
        self.first = false;
        self.file = Some(file);
        Ok(true)
    }

    /// Complete lines a writer appended late to the file renamed away, and
    /// whether more may wait there; the old file is let go after
    /// [`OLD_FILE_GRACE`] quiet reads (or an error).
    fn drain_old(&mut self) -> (Vec<String>, bool) {
        let Some(old) = self.old.as_mut() else {
            return (Vec::new(), false);
        };
        let mut buf = Vec::new();
        let read = old
            .file
            .seek(SeekFrom::Start(old.offset))
            .and_then(|_| (&mut old.file).take(MAX_READ as u64).read_to_end(&mut buf));
        let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if read.is_err() || end == 0 {
            old.quiet += 1;
            if read.is_err() || old.quiet >= OLD_FILE_GRACE {
                self.old = None;
            }
            return (Vec::new(), false);
        }
        old.quiet = 0;
        old.offset += end as u64;
        (split(&buf[..end]), buf.len() == MAX_READ)
    }

    /// Read what is new: complete lines, at most [`MAX_READ`] bytes (late
    /// lines of a file renamed away come first).
    pub fn read(&mut self) -> io::Result<Chunk> {
        let (mut lines, old_more) = self.drain_old();
        if self.file.is_none() && !self.open()? {
            return Ok(Chunk {
                lines,
                more: old_more,
                ..Chunk::default()
            });
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(Chunk::default());
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::with_capacity(8192);
        file.take(MAX_READ as u64).read_to_end(&mut buf)?;
        let full = buf.len() == MAX_READ;
        let skip = if self.discard {
            // The rest of a cut line, up to and with its line end.
            match buf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.discard = false;
                    i + 1
                }
                None => buf.len(),
            }
        } else {
            0
        };
        let body = &buf[skip..];
        let mut end = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if full && end == 0 && !body.is_empty() {
            end = body.len(); // one line longer than a read: cut it here
            self.discard = true;
        }
        lines.extend(split(&body[..end]));
        self.offset += (skip + end) as u64;
        let mut more = full || old_more;
        if !full {
            let rest = &body[end..];
            more = self.check_rotation(rest, &mut lines)? || old_more;
        }
        Ok(Chunk {
            lines,
            at: (self.dev, self.ino, self.offset),
            more,
        })
    }

    /// At the end of the file: has `path` moved on to a new file (then the
    /// unterminated `rest` is a last line, and the new file is next), or
    /// been truncated? True if a new file is next.
    fn check_rotation(&mut self, rest: &[u8], lines: &mut Vec<String>) -> io::Result<bool> {
        let m = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // Renamed away, the new one not there yet: keep the old one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if id_of(&m) != (self.dev, self.ino) {
            if !rest.is_empty() {
                lines.extend(split(rest));
                self.offset += rest.len() as u64;
            }
            // Keep reading the old file a while for what its writer still
            // appends there before it reopens the log.
            self.old = self.file.take().map(|file| Old {
                file,
                offset: self.offset,
                quiet: 0,
            });
            return Ok(true);
        }
        if m.len() < self.offset {
            self.offset = 0;
            return Ok(true);
        }
        Ok(false)
    }
}

/// `bytes` split at `\n`, `\r` ends dropped, invalid UTF-8 replaced.
fn split(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect()
}
