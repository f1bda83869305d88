use std::time::{Duration, SystemTime};

use super::*;
use crate::types::{Hold, ROOT_INO};

fn defaults() -> Defaults {
    Defaults { uid: 0, gid: 0, file_perm: 0o644, dir_perm: 0o755, mount_time: SystemTime::UNIX_EPOCH }
}

fn table(cap: usize) -> InodeState {
    InodeState::new(Duration::from_secs(5), cap, defaults())
}

fn file(path: &str, etag: &str) -> RemoteEntry {
    RemoteEntry {
        path: path.into(),
        kind: RemoteKind::File(RemoteFile {
            size: 1,
            xet_hash: None,
            etag: etag.into(),
            mtime: None,
            ..Default::default()
        }),
    }
}

fn dir_entry(path: &str) -> RemoteEntry {
    RemoteEntry { path: path.into(), kind: RemoteKind::Dir }
}

fn found(st: &mut InodeState, parent: Ino, name: &str) -> NodeView {
    match st.lookup(parent, name, Hold::Count, None).unwrap() {
        Lookup::Found(v) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

fn list(st: &mut InodeState, ino: Ino, entries: Vec<RemoteEntry>) -> Vec<Invalidation> {
    let path = st.path_of(ino);
    let epoch = st.epoch;
    st.apply_listing(ino, &path, epoch, entries)
}

const OWNER: Owner = Owner { perm: 0o644, uid: 1, gid: 1 };

#[test]
fn listing_diffs_produce_invalidations_and_keep_inode_numbers() {
    let mut st = table(1000);
    assert!(list(&mut st, ROOT_INO, vec![file("a", "1"), file("b", "1")]).is_empty());
    let a = found(&mut st, ROOT_INO, "a");
    let inval = list(&mut st, ROOT_INO, vec![file("a", "2"), file("c", "1")]);
    assert!(inval.contains(&Invalidation::Entry { parent: ROOT_INO, name: "a".into() }));
    assert!(inval.contains(&Invalidation::Inode { ino: a.ino }));
    assert!(inval.contains(&Invalidation::Entry { parent: ROOT_INO, name: "b".into() }));
    let a2 = found(&mut st, ROOT_INO, "a");
    assert_eq!(a2.ino, a.ino, "a changed content, not identity");
    assert!(a2.version > a.version, "the kernel must drop a's pages");
    assert!(matches!(st.lookup(ROOT_INO, "b", Hold::None, None).unwrap(), Lookup::Missing));
}

#[test]
fn unlisted_parents_ask_for_remote_resolution_and_negative_cache_answers() {
    let mut st = table(1000);
    list(&mut st, ROOT_INO, vec![dir_entry("d")]);
    let d = found(&mut st, ROOT_INO, "d");
    assert!(matches!(st.lookup(d.ino, "x", Hold::Count, None).unwrap(), Lookup::Unknown { path, .. } if path == "d/x"));
    st.add_negative(d.ino, "x");
    assert!(matches!(st.lookup(d.ino, "x", Hold::Count, None).unwrap(), Lookup::Missing));
}

#[test]
fn forgotten_removed_inodes_are_dropped() {
    let mut st = table(1000);
    list(&mut st, ROOT_INO, vec![file("a", "1")]);
    let a = found(&mut st, ROOT_INO, "a");
    list(&mut st, ROOT_INO, vec![]);
    assert!(st.nodes.contains_key(&a.ino), "the kernel still holds it");
    st.nodes.get_mut(&a.ino).unwrap().lookups = 0;
    st.maybe_drop(a.ino);
    assert!(!st.nodes.contains_key(&a.ino));
}

/// Looks `dir` up under the root (as the kernel would, holding it) and lists it with `n`
/// files, as the actor does.
fn list_dir(st: &mut InodeState, name: &str, n: usize) -> Ino {
    st.touch(ROOT_INO);
    let d = found(st, ROOT_INO, name);
    let entries = (0..n).map(|i| file(&format!("{name}/f{i}"), "1")).collect();
    list(st, d.ino, entries);
    st.touch(d.ino);
    st.enforce_cap(d.ino);
    d.ino
}

#[test]
fn the_table_stays_under_its_cap_and_keeps_what_is_held() {
    let mut st = table(250);
    list(&mut st, ROOT_INO, ["a", "b", "c", "d"].map(dir_entry).to_vec());
    let a = list_dir(&mut st, "a", 100);
    // The kernel holds a/f7; a handle pages through b.
    let f7 = found(&mut st, a, "f7");
    let b = list_dir(&mut st, "b", 100);
    st.nodes.get_mut(&b).unwrap().opens += 1;
    let c = list_dir(&mut st, "c", 100);
    assert!(st.len() <= 250, "{} inodes", st.len());
    assert!(st.nodes[&a].listed_at.is_none(), "the least recently used listing went");
    assert!(st.nodes[&b].listed_at.is_some(), "a directory being paged keeps its listing");
    assert!(st.nodes[&c].listed_at.is_some(), "the directory just listed keeps its listing");
    assert!(st.nodes.contains_key(&f7.ino), "a held child keeps its inode");
    // Listed again: the held child has the same number, the others come back.
    list_dir(&mut st, "a", 100);
    assert_eq!(found(&mut st, a, "f7").ino, f7.ino);
    assert!(matches!(st.lookup(a, "f8", Hold::None, None).unwrap(), Lookup::Found(_)));
    // A directory bigger than the cap alone stays listed.
    let d = list_dir(&mut st, "d", 400);
    assert!(st.nodes[&d].listed_at.is_some());
    let inos: Vec<Ino> = st.nodes.keys().copied().filter(|i| *i != ROOT_INO).collect();
    for ino in &inos {
        if let Some(n) = st.nodes.get_mut(ino) {
            (n.lookups, n.opens) = (0, 0);
        }
        st.maybe_drop(*ino);
    }
    st.unload(ROOT_INO);
    assert_eq!(st.len(), 1, "only the root is left");
}

#[test]
fn local_state_survives_listings_heads_and_the_cap() {
    let mut st = table(50);
    list(&mut st, ROOT_INO, vec![dir_entry("d"), file("remote", "1")]);
    let d = found(&mut st, ROOT_INO, "d");
    let epoch_before = st.epoch;
    let new = st.create(d.ino, "new.bin", OWNER, 7).unwrap();
    assert_eq!(new.write.status, Status::Dirty);
    st.begin_write(new.ino).unwrap();
    st.wrote(new.ino, Some(100)).unwrap();
    // A listing of d asked before the create, and one after, both lack new.bin: it stays.
    st.apply_listing(d.ino, "d", epoch_before, vec![file("d/other", "1")]);
    list(&mut st, d.ino, vec![]);
    let again = found(&mut st, d.ino, "new.bin");
    assert_eq!((again.ino, again.attr.size), (new.ino, 100));
    // A HEAD answered for an older state does not revert it.
    assert!(st.revalidated(new.ino, None, epoch_before).is_ok());
    // The root listing lacking d keeps d: a dirty file is below it.
    list(&mut st, ROOT_INO, vec![file("remote", "1")]);
    assert!(matches!(st.lookup(ROOT_INO, "d", Hold::None, None).unwrap(), Lookup::Found(_)));
    // Under cap pressure, local state is never unloaded.
    for i in 0..5 {
        let name = format!("big{i}");
        list(&mut st, ROOT_INO, vec![dir_entry(&name), dir_entry("d")]);
        list_dir(&mut st, &name, 40);
    }
    assert!(st.at_path("d/new.bin").is_some());
    // Once committed at this generation it is clean, reads go to the Hub's copy, and the
    // staging file is let go.
    let gen = st.nodes[&new.ino].write.gen;
    let f = RemoteFile { size: 100, xet_hash: Some("h".into()), etag: "h".into(), mtime: None, ..Default::default() };
    st.uploading(new.ino, gen, true);
    st.committed("d/new.bin", new.ino, gen - 1, f.clone());
    assert_ne!(st.nodes[&new.ino].write.status, Status::Clean, "an older generation does not clean it");
    let view = st.close_write(new.ino).unwrap();
    st.committed(&view.path, new.ino, gen, f);
    assert_eq!(st.nodes[&new.ino].write.status, Status::Clean);
    assert!(matches!(st.nodes[&new.ino].kind, NodeKind::File(Content::Remote(_))));
    assert_eq!(st.released, vec![7]);
}

#[test]
fn unlink_and_rename_leave_tombstones_until_the_deletes_commit() {
    let mut st = table(1000);
    list(&mut st, ROOT_INO, vec![dir_entry("d"), file("top", "1")]);
    let d = found(&mut st, ROOT_INO, "d");
    list(&mut st, d.ino, vec![file("d/a", "1"), file("d/b", "2")]);
    let removed = st.unlink(d.ino, "a").unwrap();
    assert!(removed.hub_may_have);
    // A listing that still has it (the delete is not committed) does not bring it back.
    list(&mut st, d.ino, vec![file("d/a", "1"), file("d/b", "2")]);
    assert!(matches!(st.lookup(d.ino, "a", Hold::None, None).unwrap(), Lookup::Missing));
    st.deleted("d/a");
    list(&mut st, d.ino, vec![file("d/a", "1"), file("d/b", "2")]);
    assert!(matches!(st.lookup(d.ino, "a", Hold::None, None).unwrap(), Lookup::Found(_)), "a remote re-add shows");
    // Renaming the directory moves its subtree; paths are derived.
    let b = found(&mut st, d.ino, "b");
    let r = st.rename(ROOT_INO, "d", ROOT_INO, "e", false).unwrap();
    assert_eq!(st.path_of(b.ino), "e/b");
    let moved: Vec<(&str, &str)> = r.moved.iter().map(|m| (m.old_path.as_str(), m.new_path.as_str())).collect();
    assert!(moved.contains(&("d/b", "e/b")) && moved.contains(&("d", "e")), "{moved:?}");
    assert!(st.tombstoned("d/b"));
    // Rules: no replacing a directory with a file, no moving a directory into itself.
    st.mkdir(b.parent, "sub", OWNER).unwrap();
    assert!(matches!(st.rename(ROOT_INO, "top", b.parent, "sub", false), Err(crate::error::FsError::IsDir)));
    assert!(matches!(st.rename(ROOT_INO, "e", b.parent, "inside", false), Err(crate::error::FsError::Invalid(_))));
    assert!(matches!(st.rename(ROOT_INO, "top", b.parent, "b", true), Err(crate::error::FsError::Exists)));
    assert!(matches!(st.rmdir(ROOT_INO, "e"), Err(crate::error::FsError::NotEmpty)));
}

/// Everything a message can change, as text: the nodes (all but their `Instant`s), their
/// children, the tombstones, the journaled attributes and the counters.
fn fingerprint(st: &InodeState) -> String {
    let mut inos: Vec<&Ino> = st.nodes.keys().collect();
    inos.sort();
    let mut out = String::new();
    for ino in inos {
        let n = &st.nodes[ino];
        out += &format!(
            "{ino}: {} {:?} {:?} {:?} {:?} {:?} {} {} {} {} {} {} {} {:?} {:?}\n",
            n.parent,
            n.name,
            n.links,
            n.kind,
            n.meta,
            n.write,
            n.version,
            n.touched,
            n.local_dir,
            n.lookups,
            n.opens,
            n.subdirs,
            n.removed,
            n.listed_at.is_some(),
            n.children,
        );
    }
    out + &format!(
        "{:?} {:?} {:?} {}\n",
        *st.tombstones,
        st.meta_overlay.keys().collect::<Vec<_>>(),
        st.released,
        st.epoch
    )
}

#[test]
fn a_message_that_fails_part_way_is_undone_whole() {
    let mut st = table(1000);
    list(&mut st, ROOT_INO, vec![dir_entry("d"), file("top", "1"), file("other", "1")]);
    let d = found(&mut st, ROOT_INO, "d");
    list(&mut st, d.ino, vec![file("d/a", "1"), file("d/b", "2"), dir_entry("d/sub")]);
    let sub = found(&mut st, d.ino, "sub");
    list(&mut st, sub.ino, vec![file("d/sub/x", "1")]);
    let made = st.create(d.ino, "made", OWNER, 7).unwrap();
    st.unlink(ROOT_INO, "other").unwrap();
    let before = fingerprint(&st);
    // Every kind of change in one "message": new, renamed (over another), unlinked, removed
    // directories, listings applied (a directory becoming a file), links, counts.
    st.begin();
    found(&mut st, d.ino, "a");
    st.create(ROOT_INO, "new", OWNER, 8).unwrap();
    st.mkdir(ROOT_INO, "nd", OWNER).unwrap();
    st.rename(d.ino, "a", ROOT_INO, "top", false).unwrap();
    st.rename(ROOT_INO, "d", ROOT_INO, "e", false).unwrap();
    st.unlink(d.ino, "b").unwrap();
    st.link(made.ino, ROOT_INO, "made-too").unwrap();
    st.open_write(made.ino, true, 9, true).unwrap();
    list(&mut st, ROOT_INO, vec![file("e", "1"), file("gone", "1")]);
    st.deleted("other");
    st.rmdir(ROOT_INO, "nd").unwrap();
    assert_ne!(fingerprint(&st), before);
    st.rollback();
    assert_eq!(fingerprint(&st), before);
    // And the table works on from there: a new inode number, never one handed out meanwhile.
    st.begin();
    let again = st.create(ROOT_INO, "new", OWNER, 10).unwrap();
    st.commit();
    assert!(again.ino > made.ino + 2, "an inode number was reused: {}", again.ino);
    assert_eq!(st.path_of(again.ino), "new");
    assert_eq!(found(&mut st, d.ino, "a").ino, st.at_path("d/a").unwrap());
}

#[test]
fn a_writer_of_an_acknowledged_file_writes_a_copy_and_a_stateless_write_does_not() {
    let mut st = table(1000);
    let f = st.create(ROOT_INO, "f", OWNER, 7).unwrap();
    // Closed, not committed: the journal names staging 7.
    st.close_write(f.ino).unwrap();
    // NFS: in place (each WRITE journaled as answered; a copy per WRITE would copy the file).
    assert!(matches!(st.open_write(f.ino, false, 8, false).unwrap(), OpenWrite::Ready { staging: 7, truncate: false }));
    st.close_write(f.ino).unwrap();
    // A descriptor: a copy of 7 into the fresh 9, which the node names once filled.
    match st.open_write(f.ino, false, 9, true).unwrap() {
        OpenWrite::Fill { from: FillFrom::Staging { id: 7, .. }, staging: 9, .. } => {}
        _ => panic!("no copy"),
    }
    st.fill_done(f.ino, 9, true).unwrap();
    assert_eq!(st.nodes[&f.ino].kind.clone(), NodeKind::File(Content::Local { staging: 9, size: 0 }));
    assert_eq!(st.released, vec![7], "the acknowledged copy goes once the journal is done with it");
}

#[test]
fn the_shared_view_answers_nothing_a_told_change_may_alter_until_it_is_applied() {
    let state = Arc::new(Mutex::new(table(100)));
    let shared = InodeView::new(state.clone());
    let made = state.lock().create(ROOT_INO, "held.bin", OWNER, 9).unwrap();
    let ino = made.ino;
    assert_eq!(shared.view(ino).unwrap().unwrap().attr.size, 0);
    assert!(shared.fresh_attr(ino, None).is_some());
    // A write answered at once: its message is queued, not applied.
    let settle = shared.unsettled();
    let second = shared.unsettled();
    assert!(shared.view(ino).is_none(), "a view read past a queued write");
    assert!(shared.fresh_attr(ino, None).is_none(), "attributes read past a queued write");
    state.lock().wrote_held(ino, 4096).unwrap();
    drop(settle);
    assert!(shared.view(ino).is_none(), "one of two still queued");
    drop(second);
    assert_eq!(shared.view(ino).unwrap().unwrap().attr.size, 4096);
    assert_eq!(shared.fresh_attr(ino, None).unwrap().size, 4096);
    // Smaller writes do not cut it; the generation moved with each.
    let gen = state.lock().view(ino).unwrap().write.gen;
    state.lock().wrote_held(ino, 10).unwrap();
    let v = state.lock().view(ino).unwrap();
    assert_eq!((v.attr.size, v.write.gen > gen, v.write.status), (4096, true, Status::Dirty));
}
