//! The table's collections, with an undo log: while a message is handled every change is
//! recorded, so a handler that panics half-way through a change (a bug, or the test hook)
//! leaves the table as it was before the message, not half-changed, for the next
//! incarnation of the actor (the state outlives it). Reads go through `Deref`; changes only
//! through the methods here, which log them.
//!
//! Nodes are saved whole the first time a message changes them, except their children:
//! a directory can have 100,000, so children changes are logged one name at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Deref;

use super::node::{Meta, Node};
use crate::types::Ino;

/// One change, with what undoes it.
enum Undo {
    /// The node as it was (children left out: they are restored by their own entries).
    Saved(Ino, Box<Node>),
    /// A node inserted where `Some` one was (or none).
    Inserted(Ino, Option<Box<Node>>),
    Removed(Ino, Box<Node>),
    /// `parent`'s child `name` was set; it named `Some` inode before (or nothing).
    ChildSet(Ino, String, Option<Ino>),
    ChildRemoved(Ino, String, Ino),
    ChildrenCleared(Ino, BTreeMap<String, Ino>),
}

/// Nodes by inode number.
#[derive(Default)]
pub(super) struct Nodes {
    map: HashMap<Ino, Node>,
    /// `Some` while a message is handled.
    log: Option<Vec<Undo>>,
    /// Nodes saved in this message already.
    saved: HashSet<Ino>,
}

impl Deref for Nodes {
    type Target = HashMap<Ino, Node>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Nodes {
    pub fn new(map: HashMap<Ino, Node>) -> Self {
        Self { map, ..Self::default() }
    }

    pub fn get_mut(&mut self, ino: &Ino) -> Option<&mut Node> {
        let n = self.map.get_mut(ino)?;
        if let Some(log) = &mut self.log {
            if self.saved.insert(*ino) {
                let children = std::mem::take(&mut n.children);
                log.push(Undo::Saved(*ino, Box::new(n.clone())));
                n.children = children;
            }
        }
        Some(n)
    }

    pub fn insert(&mut self, ino: Ino, node: Node) {
        let before = self.map.insert(ino, node);
        if let Some(log) = &mut self.log {
            log.push(Undo::Inserted(ino, before.map(Box::new)));
        }
    }

    pub fn remove(&mut self, ino: &Ino) -> Option<Node> {
        let n = self.map.remove(ino)?;
        match &mut self.log {
            // The log keeps the node; the caller gets a copy.
            Some(log) => {
                let copy = n.clone();
                log.push(Undo::Removed(*ino, Box::new(n)));
                Some(copy)
            }
            None => Some(n),
        }
    }

    /// Names `child` as `name` in `parent`; returns what the name held before (`None`: no
    /// such parent).
    pub fn set_child(&mut self, parent: Ino, name: &str, child: Ino) -> Option<Option<Ino>> {
        let before = self.map.get_mut(&parent)?.children.insert(name.to_string(), child);
        if let Some(log) = &mut self.log {
            log.push(Undo::ChildSet(parent, name.to_string(), before));
        }
        Some(before)
    }

    pub fn remove_child(&mut self, parent: Ino, name: &str) -> Option<Ino> {
        let ino = self.map.get_mut(&parent)?.children.remove(name)?;
        if let Some(log) = &mut self.log {
            log.push(Undo::ChildRemoved(parent, name.to_string(), ino));
        }
        Some(ino)
    }

    pub fn clear_children(&mut self, parent: Ino) {
        let Some(p) = self.map.get_mut(&parent) else { return };
        let children = std::mem::take(&mut p.children);
        if let Some(log) = &mut self.log {
            log.push(Undo::ChildrenCleared(parent, children));
        }
    }

    pub fn begin(&mut self) {
        self.log = Some(Vec::new());
    }

    pub fn commit(&mut self) {
        self.log = None;
        self.saved.clear();
    }

    /// Undoes every change since `begin`, newest first: each entry is undone on the state
    /// right after its own change, so the last one undone leaves the state before the first.
    pub fn rollback(&mut self) {
        let log = self.log.take().unwrap_or_default();
        self.saved.clear();
        for undo in log.into_iter().rev() {
            match undo {
                Undo::Saved(ino, old) => {
                    if let Some(n) = self.map.get_mut(&ino) {
                        let children = std::mem::take(&mut n.children);
                        *n = *old;
                        n.children = children;
                    }
                }
                Undo::Inserted(ino, Some(old)) => {
                    self.map.insert(ino, *old);
                }
                Undo::Inserted(ino, None) => {
                    self.map.remove(&ino);
                }
                Undo::Removed(ino, old) => {
                    self.map.insert(ino, *old);
                }
                Undo::ChildSet(parent, name, before) => {
                    if let Some(p) = self.map.get_mut(&parent) {
                        match before {
                            Some(ino) => p.children.insert(name, ino),
                            None => p.children.remove(&name),
                        };
                    }
                }
                Undo::ChildRemoved(parent, name, ino) => {
                    if let Some(p) = self.map.get_mut(&parent) {
                        p.children.insert(name, ino);
                    }
                }
                Undo::ChildrenCleared(parent, children) => {
                    if let Some(p) = self.map.get_mut(&parent) {
                        p.children = children;
                    }
                }
            }
        }
    }
}

/// A set or map whose inserts and removes are logged: `K` to the value it had (`None`:
/// absent), so a rollback puts each key back.
pub(super) struct Logged<C: Keyed> {
    items: C,
    log: Option<Vec<Change<C>>>,
}

/// A key, and the value it had before a change (`None`: absent).
type Change<C> = (<C as Keyed>::Key, Option<<C as Keyed>::Value>);

/// What `Logged` needs of a collection.
pub(super) trait Keyed: Default {
    type Key: Clone;
    type Value;
    fn put(&mut self, k: Self::Key, v: Self::Value) -> Option<Self::Value>;
    fn take(&mut self, k: &Self::Key) -> Option<Self::Value>;
}

impl Keyed for BTreeSet<String> {
    type Key = String;
    type Value = ();
    fn put(&mut self, k: String, _: ()) -> Option<()> {
        (!self.insert(k)).then_some(())
    }
    fn take(&mut self, k: &String) -> Option<()> {
        self.remove(k).then_some(())
    }
}

impl Keyed for HashMap<String, Meta> {
    type Key = String;
    type Value = Meta;
    fn put(&mut self, k: String, v: Meta) -> Option<Meta> {
        self.insert(k, v)
    }
    fn take(&mut self, k: &String) -> Option<Meta> {
        self.remove(k)
    }
}

impl<C: Keyed> Default for Logged<C> {
    fn default() -> Self {
        Self { items: C::default(), log: None }
    }
}

impl<C: Keyed> Deref for Logged<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.items
    }
}

impl<C: Keyed> Logged<C>
where
    C::Value: Clone,
{
    fn logged(&mut self, k: &C::Key, before: Option<C::Value>) -> Option<C::Value> {
        if let Some(log) = &mut self.log {
            log.push((k.clone(), before.clone()));
        }
        before
    }

    pub fn begin(&mut self) {
        self.log = Some(Vec::new());
    }

    pub fn commit(&mut self) {
        self.log = None;
    }

    pub fn rollback(&mut self) {
        for (k, before) in self.log.take().unwrap_or_default().into_iter().rev() {
            match before {
                Some(v) => Keyed::put(&mut self.items, k, v),
                None => Keyed::take(&mut self.items, &k),
            };
        }
    }
}

impl Logged<BTreeSet<String>> {
    /// Adds `k`; whether it was new.
    pub fn insert(&mut self, k: String) -> bool {
        let before = Keyed::put(&mut self.items, k.clone(), ());
        self.logged(&k, before).is_none()
    }

    /// Removes `k`; whether it was there.
    pub fn remove(&mut self, k: &str) -> bool {
        let k = k.to_string();
        let before = Keyed::take(&mut self.items, &k);
        self.logged(&k, before).is_some()
    }

    pub fn extend(&mut self, ks: impl IntoIterator<Item = String>) {
        for k in ks {
            self.insert(k);
        }
    }
}

impl Logged<HashMap<String, Meta>> {
    pub fn insert(&mut self, k: String, v: Meta) -> Option<Meta> {
        let before = Keyed::put(&mut self.items, k.clone(), v);
        self.logged(&k, before)
    }

    pub fn remove(&mut self, k: &str) -> Option<Meta> {
        let k = k.to_string();
        let before = Keyed::take(&mut self.items, &k);
        self.logged(&k, before)
    }
}
