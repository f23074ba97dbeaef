//! The inode table: FUSE node ids and where each node's object is in the backing folder.
//!
//! A node id stands for one backing inode (by inode number) for as long as that inode has a
//! name; its path (relative to the backing root, empty for the root) follows renames. When
//! the object loses its name (unlinked, renamed over, undone by a crash) the node keeps its
//! id without a path — open handles still reach it through their descriptors — and its
//! inode number is forgotten, so a new object that reuses the number gets a new node id.
//!
//! **Invariants:** node 1 is the root and always has the empty path; `by_ino` maps an inode
//! number to a node whose `ino` it is and which has a path; no two nodes with a path share
//! one. Node 2 is reserved for the control file, which is not in the table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The root's node id, fixed by FUSE.
pub(crate) const ROOT: u64 = 1;
/// The control file's node id.
pub(crate) const CONTROL: u64 = 2;

#[derive(Debug)]
pub(crate) struct Node {
    /// Relative to the backing root; `None` once the object has no name.
    pub(crate) path: Option<PathBuf>,
    /// The backing inode number.
    pub(crate) ino: u64,
    /// Lookups the kernel holds (it forgets them in `forget`).
    lookups: u64,
}

#[derive(Debug)]
pub(crate) struct Nodes {
    nodes: HashMap<u64, Node>,
    by_ino: HashMap<u64, u64>,
    next: u64,
}

impl Nodes {
    pub(crate) fn new(root_ino: u64) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                path: Some(PathBuf::new()),
                ino: root_ino,
                lookups: 1,
            },
        );
        Self {
            nodes,
            by_ino: HashMap::from([(root_ino, ROOT)]),
            next: CONTROL + 1,
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// The path of node `id`, if it has one.
    pub(crate) fn path(&self, id: u64) -> Option<&Path> {
        self.nodes.get(&id).and_then(|node| node.path.as_deref())
    }

    /// The node for the object at `path` with inode number `ino`, made if new; `lookup`
    /// counts one more reference the kernel now holds.
    pub(crate) fn at(&mut self, path: &Path, ino: u64, lookup: bool) -> u64 {
        let id = match self.by_ino.get(&ino) {
            Some(&id) => id,
            None => {
                let id = self.next;
                self.next += 1;
                self.by_ino.insert(ino, id);
                self.nodes.insert(
                    id,
                    Node {
                        path: None,
                        ino,
                        lookups: 0,
                    },
                );
                id
            }
        };
        if let Some(node) = self.nodes.get_mut(&id) {
            node.path = Some(path.to_owned());
            node.lookups += u64::from(lookup);
        }
        id
    }

    /// The kernel dropped `count` references to node `id`.
    pub(crate) fn forget(&mut self, id: u64, count: u64) {
        if id == ROOT {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            node.lookups = node.lookups.saturating_sub(count);
            // A node with a name stays: its id is then stable for readdir and stat.
            if node.lookups == 0 && node.path.is_none() {
                self.nodes.remove(&id);
            }
        }
    }

    /// The object at `path` lost its name.
    pub(crate) fn unnamed(&mut self, path: &Path) {
        let found = self
            .nodes
            .iter()
            .find(|(_, node)| node.path.as_deref() == Some(path))
            .map(|(&id, node)| (id, node.ino));
        if let Some((id, ino)) = found {
            self.by_ino.remove(&ino);
            if let Some(node) = self.nodes.get_mut(&id) {
                node.path = None;
            }
        }
    }

    /// The object at `from` (and everything under it) is now at `to`.
    pub(crate) fn moved(&mut self, from: &Path, to: &Path) {
        for node in self.nodes.values_mut() {
            let Some(path) = &node.path else { continue };
            if let Ok(rest) = path.strip_prefix(from) {
                node.path = Some(if rest.as_os_str().is_empty() {
                    to.to_owned()
                } else {
                    to.join(rest)
                });
            }
        }
    }

    /// After a crash: `names` maps every inode number in the backing folder to its path.
    /// Named nodes follow their inode, or lose their name with it. Nodes already without a
    /// name stay so (an object the crash brought back gets a new node at its next lookup):
    /// their inode number may since belong to another object.
    pub(crate) fn rename_all(&mut self, names: &HashMap<u64, PathBuf>) {
        let named = std::mem::take(&mut self.by_ino);
        for node in self.nodes.values_mut() {
            node.path = None;
        }
        for (ino, id) in named {
            if let (Some(path), Some(node)) = (names.get(&ino), self.nodes.get_mut(&id)) {
                node.path = Some(path.clone());
                self.by_ino.insert(ino, id);
            }
        }
        self.nodes
            .retain(|&id, node| id == ROOT || node.path.is_some() || node.lookups > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_follow_renames_and_lose_names() {
        let mut nodes = Nodes::new(100);
        let dir = nodes.at(Path::new("d"), 101, true);
        let file = nodes.at(Path::new("d/f"), 102, true);
        assert_eq!(nodes.at(Path::new("d/f"), 102, true), file);
        nodes.moved(Path::new("d"), Path::new("e"));
        assert_eq!(nodes.path(dir), Some(Path::new("e")));
        assert_eq!(nodes.path(file), Some(Path::new("e/f")));
        nodes.unnamed(Path::new("e/f"));
        assert_eq!(nodes.path(file), None);
        // The number may be reused by a new object: a new node.
        assert_ne!(nodes.at(Path::new("e/g"), 102, true), file);
        nodes.forget(file, 1);
        assert!(nodes.get(file).is_some(), "the kernel still holds it");
        let names = HashMap::from([
            (100, PathBuf::new()),
            (101, PathBuf::from("back")),
            (102, PathBuf::from("back/g")),
        ]);
        nodes.rename_all(&names);
        assert_eq!(nodes.path(dir), Some(Path::new("back")));
        assert_eq!(nodes.path(ROOT), Some(Path::new("")));
        // 102 belongs to the newer node; the unnamed old one stays unnamed.
        assert_eq!(nodes.path(file), None);
        let newer = nodes.at(Path::new("back/g"), 102, false);
        assert_ne!(newer, file);
        assert_eq!(nodes.path(newer), Some(Path::new("back/g")));
        nodes.forget(file, 1);
        assert!(nodes.get(file).is_none(), "forgotten without a name: gone");
    }
}
