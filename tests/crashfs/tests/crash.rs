//! crashfs bites and is faithful: through a real FUSE mount, what was synced survives a
//! crash and what was not is gone — file data by `fsync`/`fdatasync`, names by the
//! directory's `fsync`, each on its own.

mod support;

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use crashfs::CrashOptions;
use support::mount;

const MIB: usize = 1 << 20;

#[test]
fn a_synced_write_survives_a_crash() {
    let Some(f) = mount("a_synced_write_survives_a_crash") else {
        return;
    };
    f.durable("journal", b"");
    let file = f.open_rw("journal");
    file.write_all_at(b"acknowledged", 0).unwrap();
    file.sync_data().unwrap();
    drop(file);
    f.crash();
    assert_eq!(f.read("journal"), b"acknowledged");
}

#[test]
fn an_unsynced_write_is_gone_content_and_size() {
    let Some(f) = mount("an_unsynced_write_is_gone_content_and_size") else {
        return;
    };
    f.durable("journal", b"abc");
    let file = f.open_rw("journal");
    file.write_all_at(b"ZZZZZZZZ", 1).unwrap();
    file.write_all_at(b"tail", 100).unwrap();
    assert_eq!(f.mount.pending().files, 1);
    drop(file);
    assert_eq!(
        f.read("journal").len(),
        104,
        "kill -9 alone would keep all of it"
    );
    let report = f.crash();
    assert_eq!((report.files_reverted, report.writes_discarded), (1, 2));
    assert_eq!(f.read("journal"), b"abc");
    assert_eq!(std::fs::metadata(f.path("journal")).unwrap().len(), 3);
    assert_eq!(f.mount.pending(), crashfs::Pending::default());
}

#[test]
fn only_the_writes_after_the_last_sync_are_lost() {
    let Some(f) = mount("only_the_writes_after_the_last_sync_are_lost") else {
        return;
    };
    f.durable("log", b"");
    let mut file = OpenOptions::new().append(true).open(f.path("log")).unwrap();
    file.write_all(b"one ").unwrap();
    file.write_all(b"two ").unwrap();
    file.sync_all().unwrap();
    file.write_all(b"three").unwrap();
    drop(file);
    assert_eq!(f.read("log"), b"one two three");
    f.crash();
    assert_eq!(f.read("log"), b"one two ");
}

#[test]
fn a_torn_write_keeps_a_prefix_only() {
    let Some(f) = mount("a_torn_write_keeps_a_prefix_only") else {
        return;
    };
    f.durable("segment", b"0123456789");
    let write = vec![b'x'; 3 * MIB + 17];
    let mut kept_some = false;
    for seed in 0..8 {
        let file = f.open_rw("segment");
        file.write_all_at(b"lost", 0).unwrap();
        // One write(2) the kernel splits into several requests: torn as one.
        file.write_all_at(&write, 5).unwrap();
        drop(file);
        let report = f
            .mount
            .crash(CrashOptions {
                tear: true,
                seed: Some(seed),
            })
            .unwrap();
        assert_eq!(report.seed, seed);
        let [torn] = report.torn.as_slice() else {
            panic!("one torn write expected: {report:?}");
        };
        assert_eq!((torn.offset, torn.len), (5, write.len() as u64));
        assert!(torn.kept < torn.len, "a tear keeps a proper prefix");
        let kept = torn.kept as usize;
        let mut expected = b"0123456789".to_vec();
        expected.resize(expected.len().max(5 + kept), 0);
        expected[5..5 + kept].fill(b'x');
        let got = f.read("segment");
        assert!(
            got == expected,
            "seed {seed}: not the durable file plus a prefix"
        );
        kept_some |= kept > 5;
        // Back to the durable content for the next seed.
        f.write_synced("segment", b"0123456789");
    }
    assert!(kept_some, "eight seeds all kept almost nothing");
}

#[test]
fn a_created_file_needs_its_directory_synced() {
    let Some(f) = mount("a_created_file_needs_its_directory_synced") else {
        return;
    };
    std::fs::create_dir(f.path("data")).unwrap();
    f.sync_dir("");
    f.write_synced("data/named", b"synced data and name");
    f.sync_dir("data");
    f.write_synced("data/unnamed", b"synced data, unsynced name");
    let report = f.crash();
    assert_eq!(report.entries_undone, 1);
    assert_eq!(f.names("data"), ["named"]);
    assert_eq!(f.read("data/named"), b"synced data and name");

    std::fs::create_dir(f.path("unsynced-dir")).unwrap();
    f.write_synced("unsynced-dir/file", b"x");
    f.sync_dir("unsynced-dir");
    f.crash();
    assert!(
        !f.exists("unsynced-dir"),
        "its own entry in the root was never synced"
    );
}

#[test]
fn rename_is_undone_unless_the_directory_was_synced() {
    let Some(f) = mount("rename_is_undone_unless_the_directory_was_synced") else {
        return;
    };
    f.durable("old", b"old");
    f.durable("target", b"target");
    std::fs::rename(f.path("old"), f.path("target")).unwrap();
    assert_eq!(f.names(""), ["target"]);
    f.crash();
    assert_eq!(f.names(""), ["old", "target"]);
    assert_eq!(f.read("target"), b"target");

    std::fs::rename(f.path("old"), f.path("target")).unwrap();
    f.sync_dir("");
    f.crash();
    assert_eq!(f.names(""), ["target"]);
    assert_eq!(f.read("target"), b"old");
}

#[test]
fn unlink_is_undone_unless_the_directory_was_synced() {
    let Some(f) = mount("unlink_is_undone_unless_the_directory_was_synced") else {
        return;
    };
    f.durable("segment", b"live records");
    std::fs::remove_file(f.path("segment")).unwrap();
    assert!(!f.exists("segment"));
    f.crash();
    assert_eq!(f.read("segment"), b"live records");

    std::fs::remove_file(f.path("segment")).unwrap();
    f.sync_dir("");
    f.crash();
    assert!(!f.exists("segment"));
    assert!(
        std::fs::read_dir(f.backing.join(crashfs::HIDDEN).join("trash"))
            .unwrap()
            .next()
            .is_none(),
        "a durable removal frees its space"
    );
}

#[test]
fn replacing_a_file_by_rename_is_durable_only_with_the_directory() {
    // hopmq's pattern for small files: write a temporary, sync it, rename over, sync dir.
    let Some(f) = mount("replacing_a_file_by_rename_is_durable_only_with_the_directory") else {
        return;
    };
    f.durable("drained-links", b"a\n");
    f.write_synced("drained-links.tmp", b"a\nb\n");
    std::fs::rename(f.path("drained-links.tmp"), f.path("drained-links")).unwrap();
    f.sync_dir("");
    f.crash();
    assert_eq!(f.names(""), ["drained-links"]);
    assert_eq!(f.read("drained-links"), b"a\nb\n");
}

#[test]
fn a_large_file_keeps_exactly_its_synced_prefix() {
    let Some(f) = mount("a_large_file_keeps_exactly_its_synced_prefix") else {
        return;
    };
    f.durable("segment", b"");
    let file = f.open_rw("segment");
    let chunk = |i: usize| vec![i as u8 + 1; MIB];
    for i in 0..8 {
        file.write_all_at(&chunk(i), (i * MIB) as u64).unwrap();
        if i < 5 {
            file.sync_data().unwrap();
        }
    }
    drop(file);
    f.crash();
    let got = f.read("segment");
    assert_eq!(got.len(), 5 * MIB);
    for i in 0..5 {
        assert!(got[i * MIB..(i + 1) * MIB] == chunk(i)[..], "chunk {i}");
    }
}

#[test]
fn a_pre_zeroed_segment_is_undone_without_copying_it() {
    let Some(f) = mount("a_pre_zeroed_segment_is_undone_without_copying_it") else {
        return;
    };
    // As hopmq prepares a segment: zeros a synced MiB at a time.
    f.durable("00000001.seg", b"");
    let file = f.open_rw("00000001.seg");
    let zeros = vec![0u8; MIB];
    for i in 0..16 {
        file.write_all_at(&zeros, (i * MIB) as u64).unwrap();
        file.sync_data().unwrap();
    }
    file.write_all_at(&[7u8; 4096], 0).unwrap();
    file.sync_data().unwrap();
    file.write_all_at(&[9u8; 512 * 1024], 4096).unwrap();
    let pending = f.mount.pending();
    assert_eq!(
        (pending.records, pending.memory_bytes),
        (1, 0),
        "zeros are only counted"
    );
    drop(file);
    f.crash();
    let got = f.read("00000001.seg");
    assert_eq!(got.len(), 16 * MIB);
    assert!(got[..4096].iter().all(|&b| b == 7));
    assert!(got[4096..].iter().all(|&b| b == 0));
}

#[test]
fn size_changes_are_undone_unless_synced() {
    let Some(f) = mount("size_changes_are_undone_unless_synced") else {
        return;
    };
    f.durable("file", b"0123456789");
    let file = f.open_rw("file");
    file.set_len(4).unwrap();
    file.set_len(20).unwrap();
    drop(file);
    f.crash();
    assert_eq!(f.read("file"), b"0123456789");

    let file = f.open_rw("file");
    file.set_len(4).unwrap();
    file.sync_all().unwrap();
    drop(file);
    f.crash();
    assert_eq!(f.read("file"), b"0123");

    // O_TRUNC, as File::create does to an existing file.
    File::create(f.path("file")).unwrap();
    assert_eq!(f.read("file"), b"");
    f.crash();
    assert_eq!(f.read("file"), b"0123");
}

#[test]
fn files_opened_before_a_crash_fail_after_it() {
    let Some(f) = mount("files_opened_before_a_crash_fail_after_it") else {
        return;
    };
    f.durable("file", b"x");
    let file = f.open_rw("file");
    f.crash();
    let error = file.write_all_at(b"y", 0).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(5), "EIO: {error}");
    assert!(file.sync_data().is_err());
    drop(file);
    // A new open works, and sees the durable state.
    assert_eq!(f.read("file"), b"x");
}

#[test]
fn open_flags_behave_as_on_a_disk() {
    let Some(f) = mount("open_flags_behave_as_on_a_disk") else {
        return;
    };
    f.durable("file", b"head");
    let exclusive = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(f.path("file"));
    assert_eq!(exclusive.unwrap_err().kind(), ErrorKind::AlreadyExists);
    let mut appending = OpenOptions::new()
        .append(true)
        .open(f.path("file"))
        .unwrap();
    appending.write_all(b"+tail").unwrap();
    assert_eq!(f.read("file"), b"head+tail");
    // O_DSYNC: each write is durable when it returns.
    let mut synced = OpenOptions::new()
        .append(true)
        .custom_flags(rustix::fs::OFlags::DSYNC.bits() as i32)
        .open(f.path("file"))
        .unwrap();
    synced.write_all(b"!").unwrap();
    drop((appending, synced));
    f.crash();
    // As an fdatasync after the write: the file's earlier writes are durable too.
    assert_eq!(f.read("file"), b"head+tail!");
}

#[test]
fn metadata_and_statfs_pass_through() {
    let Some(f) = mount("metadata_and_statfs_pass_through") else {
        return;
    };
    f.durable("file", b"12345");
    std::fs::set_permissions(
        f.path("file"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let through = std::fs::metadata(f.path("file")).unwrap();
    let backing = std::fs::metadata(f.backing.join("file")).unwrap();
    assert_eq!(through.len(), 5);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&through.permissions()) & 0o777,
        0o600
    );
    assert_eq!(through.modified().unwrap(), backing.modified().unwrap());
    let mounted = rustix::fs::statvfs(f.mount.mountpoint()).unwrap();
    let real = rustix::fs::statvfs(&f.backing).unwrap();
    assert_eq!(
        (mounted.f_blocks, mounted.f_bsize),
        (real.f_blocks, real.f_bsize)
    );
}

#[test]
fn crashfs_names_are_hidden_and_reserved() {
    let Some(f) = mount("crashfs_names_are_hidden_and_reserved") else {
        return;
    };
    f.durable("file", b"x");
    assert_eq!(f.names(""), ["file"]);
    assert!(File::create(f.path(crashfs::HIDDEN)).is_err());
    assert!(std::fs::rename(f.path("file"), f.path(crashfs::control::CONTROL)).is_err());
    let mut control = OpenOptions::new()
        .write(true)
        .open(f.path(crashfs::control::CONTROL))
        .unwrap();
    let refused = control.write_all(b"reboot\n").unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_unix_socket_can_live_in_the_mount() {
    // hopmq binds its API socket in its data directory by default.
    let Some(f) = mount("a_unix_socket_can_live_in_the_mount") else {
        return;
    };
    let path = f.path("qmgr.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();
    let mut got = [0u8; 5];
    std::io::Read::read_exact(&mut server, &mut got).unwrap();
    assert_eq!(&got, b"hello");
}

#[test]
fn a_clean_unmount_keeps_everything() {
    let Some(f) = mount("a_clean_unmount_keeps_everything") else {
        return;
    };
    f.write_synced("unsynced-name", b"data");
    std::fs::write(f.path("unsynced-data"), b"data").unwrap();
    std::fs::create_dir(f.path("dir")).unwrap();
    std::fs::remove_dir(f.path("dir")).unwrap();
    let support::Fixture {
        mount,
        backing,
        folder: _folder,
    } = f;
    mount.unmount().unwrap();
    assert_eq!(
        std::fs::read(backing.join("unsynced-name")).unwrap(),
        b"data"
    );
    assert_eq!(
        std::fs::read(backing.join("unsynced-data")).unwrap(),
        b"data"
    );
    let trash = backing.join(crashfs::HIDDEN).join("trash");
    assert!(std::fs::read_dir(trash).unwrap().next().is_none());
}

#[test]
fn fallocate_is_undone_unless_synced() {
    use rustix::fs::FallocateFlags;
    let Some(f) = mount("fallocate_is_undone_unless_synced") else {
        return;
    };
    f.durable("file", b"abcdef");
    let file = f.open_rw("file");
    rustix::fs::fallocate(&file, FallocateFlags::empty(), 0, 8192).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 8192);
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    rustix::fs::fallocate(&file, punch, 0, 3).unwrap();
    assert_eq!(&f.read("file")[..6], b"\0\0\0def");
    drop(file);
    f.crash();
    assert_eq!(f.read("file"), b"abcdef");
}

#[test]
fn an_unlinked_open_file_still_works_until_the_crash() {
    let Some(f) = mount("an_unlinked_open_file_still_works_until_the_crash") else {
        return;
    };
    f.durable("segment", b"12345");
    let file = f.open_rw("segment");
    std::fs::remove_file(f.path("segment")).unwrap();
    assert_eq!(
        file.metadata().unwrap().len(),
        5,
        "fstat of an unlinked file"
    );
    file.write_all_at(b"more", 5).unwrap();
    let mut got = [0u8; 9];
    file.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got, b"12345more");
    f.crash();
    assert_eq!(
        f.read("segment"),
        b"12345",
        "the removal and the write were never synced"
    );
}

#[test]
fn a_renamed_directory_comes_back_with_its_durable_entries() {
    let Some(f) = mount("a_renamed_directory_comes_back_with_its_durable_entries") else {
        return;
    };
    std::fs::create_dir(f.path("a")).unwrap();
    f.sync_dir("");
    f.durable("a/f", b"f");
    std::fs::rename(f.path("a"), f.path("b")).unwrap();
    // Synced in the directory itself, under its new name; the rename is not.
    f.durable("b/g", b"g");
    f.crash();
    assert_eq!(f.names(""), ["a"]);
    assert_eq!(f.names("a"), ["f", "g"]);
    assert_eq!(f.read("a/g"), b"g");
}

#[test]
fn a_seed_tears_the_same_way_twice() {
    let Some(f) = mount("a_seed_tears_the_same_way_twice") else {
        return;
    };
    f.durable("file", b"");
    let mut kept = Vec::new();
    for _ in 0..2 {
        f.open_rw("file").write_all_at(&[1u8; 100_000], 0).unwrap();
        let options = CrashOptions {
            tear: true,
            seed: Some(77),
        };
        let report = f.mount.crash(options).unwrap();
        kept.push(report.torn[0].kept);
        assert_eq!(f.read("file").len() as u64, report.torn[0].kept);
    }
    assert_eq!(kept[0], kept[1]);
}
