//! Writing the finished image: PNG with an A1111-style `parameters` tEXt chunk,
//! written to a temporary file beside the target and renamed into place, so a
//! crash or kill leaves either the complete file or none.
//!
//! What easel writes over: a regular file, or nothing. Anything else at the name is
//! refused (exit 2) before any work and again just before the rename, because the
//! rename would put a new regular file in its place: a symbolic link (neither written
//! through, which would put the image where the user did not name, nor replaced, which
//! would destroy the link), a device node, a FIFO, a socket, a folder. The folders
//! above the file are followed as given.

use std::fmt::Write as _;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod parameters;
pub use parameters::{quote, Parameters};

/// Encode RGBA8 pixels as PNG bytes with the parameters chunk.
pub fn encode_png(
    rgba: &[u8],
    width: usize,
    height: usize,
    params: &Parameters,
) -> Result<Vec<u8>> {
    if rgba.len() != width * height * 4 {
        return Err(Error::Gpu(format!(
            "image: {} bytes for {width}x{height} RGBA",
            rgba.len()
        )));
    }
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let png_err = |e: png::EncodingError| Error::Gpu(format!("png: {e}"));
    let text = chunk_text(&params.to_text());
    // tEXt holds Latin-1 only; prompts beyond it (curly quotes, emoji, CJK) go in
    // an iTXt chunk (UTF-8), as Pillow and the A1111 web UI write them.
    if text.chars().all(|c| u32::from(c) < 0x100) {
        encoder.add_text_chunk("parameters".into(), text)
    } else {
        encoder.add_itxt_chunk("parameters".into(), text)
    }
    .map_err(png_err)?;
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(rgba).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(bytes)
}

/// The chunk's text with every control character but the line feed (NUL, tab, CR,
/// ESC, DEL, the C1 range) written as `\xHH`. A NUL is the chunk's own field separator
/// and the PNG spec gives the others no meaning in text; a prompt or a model folder's
/// name can hold any of them (a job line's `"\u0000"`). Backslashes are kept as they
/// are (A1111 prompts escape brackets with them), so this is for reading, not reversing.
fn chunk_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Refuse `path` as an output unless it is absent or a regular file (exit 2, one line
/// naming it and what it is).
pub fn check_target(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::bad_input!(
            "{}: cannot write output: {e}",
            path.display()
        )),
        Ok(meta) if meta.file_type().is_symlink() => Err(crate::bad_input!(
            "{}: is a symbolic link; easel neither writes through nor replaces one (name its target, or remove the link)",
            path.display()
        )),
        Ok(meta) if !meta.is_file() => Err(crate::bad_input!(
            "{}: is not a regular file ({}); easel replaces only regular files",
            path.display(),
            kind(&meta)
        )),
        Ok(_) => Ok(()),
    }
}

/// What a non-regular file is, in words.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        for (is, name) in [
            (t.is_fifo(), "a FIFO"),
            (t.is_char_device(), "a character device"),
            (t.is_block_device(), "a block device"),
            (t.is_socket(), "a socket"),
        ] {
            if is {
                return name;
            }
        }
    }
    "a special file"
}

/// easel writes PNG only (the `parameters` text chunk has no place in JPEG or WebP),
/// so a name with another extension is refused before any work (exit 2) rather than
/// given PNG bytes under a name that says otherwise; a name with no extension is fine.
/// `flag` names the option in the message (`-o`, `--trace`).
pub fn check_png_name(flag: &str, path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if !ext.eq_ignore_ascii_case("png") => Err(Error::BadInput(format!(
            "{flag} {}: easel writes PNG; use a .png name",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Check, before any GPU work, that `path` can be written: it is absent or a regular
/// file ([`check_target`]), and its folder exists and accepts a file. Nothing is left
/// behind.
pub fn check_writable(path: &Path) -> Result<()> {
    check_target(path)?;
    let probe = temp_path(path);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| Error::BadInput(format!("{}: cannot write output: {e}", path.display())))?;
    drop(file);
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Write `value` to `path` as pretty-printed JSON, atomically ([`write_atomic`]).
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    write_atomic(path, format!("{text}\n").as_bytes())
}

/// Write `bytes` to `path` atomically: temp file in the same folder, fsync, rename.
/// Refused, leaving everything as it was, unless `path` is absent or a regular file,
/// both before the temp file is written and just before the rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    check_target(path)?;
    let tmp = temp_path(path);
    let result = write_new(&tmp, bytes)
        .map_err(|e| Error::io(path, e))
        .and_then(|()| check_target(path))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `bytes` into a new file at `tmp`, fsynced. `create_new` (O_EXCL) never follows a
/// link; what an earlier process of this PID left at the name is removed first.
fn write_new(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let create = || OpenOptions::new().write(true).create_new(true).open(tmp);
    let mut file = match create() {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            std::fs::remove_file(tmp)?;
            create()?
        }
        opened => opened?,
    };
    file.write_all(bytes)?;
    file.sync_all()
}

/// Open `path` with `options` (which may create it) for a file easel keeps open and
/// appends to (a batch's manifest, its lock file), with [`check_target`]'s rules: a
/// link or a non-regular file is refused, not opened. On Unix the file opened must be
/// the one now at `path` (same device and inode), so a link swapped in between the
/// check and the open is refused too.
pub fn open_regular(path: &Path, options: &OpenOptions) -> Result<File> {
    check_target(path)?;
    let file = options.open(path).map_err(|e| Error::io(path, e))?;
    check_target(path)?;
    let opened = file.metadata().map_err(|e| Error::io(path, e))?;
    let named = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if !opened.is_file() || !same_inode(&opened, &named) {
        return Err(crate::bad_input!(
            "{}: another file took its name while it was opened; not used",
            path.display()
        ));
    }
    Ok(file)
}

/// Are two metadata the same file? (Unix: device and inode; elsewhere assumed.)
pub fn same_inode(a: &Metadata, b: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        true
    }
}

/// Do `a` and `b` name one file (so writing both would lose one)? Compared by their
/// folders' canonical paths and their file names; the folders must exist
/// ([`check_writable`] first), else the paths are compared as written.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let place = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some((std::fs::canonicalize(dir).ok()?, p.file_name()?.to_owned()))
    };
    match (place(a), place(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// `dir/.name.<pid>.tmp`: hidden, unique per process, on the same filesystem.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp),
        _ => PathBuf::from(tmp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::parameters::tests::params;

    #[test]
    fn png_round_trips_pixels_and_parameters() {
        let rgba: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 10) as u8).collect();
        let bytes = encode_png(&rgba, 2, 3, &params()).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let text = &reader.info().uncompressed_latin1_text;
        assert_eq!(text[0].keyword, "parameters");
        assert_eq!(text[0].text, params().to_text());
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(buf, rgba);
    }

    #[test]
    fn prompts_beyond_latin1_go_in_itxt() {
        let mut p = params();
        p.prompt = "japanese “congratulations” button:: 🍎 りんご".into();
        let bytes = encode_png(&[0; 4], 1, 1, &p).unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let info = reader.info();
        assert!(info.uncompressed_latin1_text.is_empty());
        assert_eq!(info.utf8_text[0].keyword, "parameters");
        assert_eq!(info.utf8_text[0].get_text().unwrap(), p.to_text());
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("easel-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.png");
        check_writable(&path).unwrap();
        write_atomic(&path, b"abc").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.png")]);
        let missing = dir.join("no-such-dir").join("y.png");
        let err = check_writable(&missing).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn control_characters_are_escaped_in_the_chunk() {
        let mut p = params();
        p.prompt = "a\0b\tc\r\u{1b}[31m\u{7f}\u{85}\nsecond line".into();
        let bytes = encode_png(&[0; 4], 1, 1, &p).unwrap();
        // The tEXt chunk's data as written: `parameters`, NUL, then the text.
        let at = bytes.windows(4).position(|w| w == b"tEXt").unwrap();
        let len = u32::from_be_bytes(bytes[at - 4..at].try_into().unwrap()) as usize;
        let data = &bytes[at + 4..at + 4 + len];
        let text = &data[b"parameters\0".len()..];
        let bad: Vec<u8> = text
            .iter()
            .copied()
            .filter(|&b| (b < 0x20 && b != b'\n') || (0x7f..0xa0).contains(&b))
            .collect();
        assert!(bad.is_empty(), "control bytes {bad:?} in the chunk");
        let reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let got = &reader.info().uncompressed_latin1_text[0].text;
        assert!(
            got.starts_with("a\\x00b\\x09c\\x0d\\x1b[31m\\x7f\\x85\nsecond line\nSteps: 30"),
            "{got:?}"
        );
    }

    /// A temp folder for one test, removed at the end.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("easel-output-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[cfg(unix)]
    #[test]
    fn links_and_special_files_are_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = scratch("special");
        let target = dir.join("target.png");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.join("link.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.join("fifo.png");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let folder = dir.join("folder.png");
        std::fs::create_dir(&folder).unwrap();
        let mut cases = vec![
            (link.clone(), "is a symbolic link"),
            (fifo.clone(), "is not a regular file (a FIFO)"),
            (folder.clone(), "is not a regular file (a folder)"),
        ];
        // As root (CI), a device node of our own, like /dev/null (1, 3).
        let node = dir.join("null.png");
        let mknod = std::process::Command::new("mknod")
            .arg(&node)
            .args(["c", "1", "3"])
            .status();
        if mknod.is_ok_and(|s| s.success()) {
            cases.push((node.clone(), "is not a regular file (a character device)"));
        }
        for (path, wanted) in &cases {
            let before = std::fs::symlink_metadata(path).unwrap().file_type();
            for err in [
                check_writable(path).unwrap_err(),
                write_atomic(path, b"png").unwrap_err(),
                open_regular(path, OpenOptions::new().append(true).create(true)).unwrap_err(),
            ] {
                assert_eq!(err.exit_code(), 2, "{err}");
                let message = err.to_string();
                assert!(message.contains(wanted), "{message}");
                assert!(message.starts_with(path.to_str().unwrap()), "{message}");
            }
            let after = std::fs::symlink_metadata(path).unwrap().file_type();
            assert_eq!(
                (
                    after.is_symlink(),
                    after.is_fifo(),
                    after.is_dir(),
                    after.is_char_device()
                ),
                (
                    before.is_symlink(),
                    before.is_fifo(),
                    before.is_dir(),
                    before.is_char_device()
                ),
                "{} replaced",
                path.display()
            );
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(std::fs::read_dir(&folder).unwrap().next().is_none());
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        // A regular file is still replaced, and a temp file of this PID left by an
        // earlier process, even a link, is removed rather than written through.
        let stale = temp_path(&target);
        std::os::unix::fs::symlink(dir.join("elsewhere"), &stale).unwrap();
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(!dir.join("elsewhere").exists() && !stale.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn same_file_sees_through_spellings() {
        let dir = scratch("same");
        std::fs::create_dir(dir.join("sub")).unwrap();
        let a = dir.join("sub/x.png");
        assert!(same_file(&a, &dir.join("sub/../sub/./x.png")));
        assert!(!same_file(&a, &dir.join("sub/y.png")));
        assert!(!same_file(&a, &dir.join("x.png")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
