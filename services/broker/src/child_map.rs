//! [`ChildMap`]: the children of a trie node (the subscription index's and
//! the retained store's), by topic level.
//!
//! Most nodes of a device fleet's topic tree have one child
//! (`devices/{d}/status`: `{d}` has `status`) and one level has many (the
//! device ids). A hash map's smallest table has four slots: one child in a
//! map cost about 370 bytes, per device and per such level (issue 16). A
//! few children are kept in a vector sized to them and searched in order;
//! past [`FEW`] they move to a map, so a wide level is still one lookup.

use std::collections::HashMap;

/// Children kept in a vector before they move to a map.
const FEW: usize = 8;

#[derive(Debug)]
pub(crate) enum ChildMap<N> {
    Few(Vec<(Box<str>, N)>),
    Many(HashMap<Box<str>, N>),
}

impl<N> Default for ChildMap<N> {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl<N: Default> ChildMap<N> {
    /// The child at `level`, made empty if there is none.
    pub(crate) fn get_or_default(&mut self, level: &str) -> &mut N {
        if let Self::Few(few) = self
            && few.len() >= FEW
            && !few.iter().any(|(l, _)| &**l == level)
        {
            *self = Self::Many(std::mem::take(few).into_iter().collect());
        }
        match self {
            Self::Few(few) => {
                let at = match few.iter().position(|(l, _)| &**l == level) {
                    Some(at) => at,
                    None => {
                        few.reserve_exact(1);
                        few.push((Box::from(level), N::default()));
                        few.len() - 1
                    }
                };
                &mut few[at].1
            }
            Self::Many(many) => many.entry(Box::from(level)).or_default(),
        }
    }
}

impl<N> ChildMap<N> {
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        match self {
            Self::Few(few) => few.iter().find(|(l, _)| &**l == level).map(|(_, n)| n),
            Self::Many(many) => many.get(level),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            Self::Few(few) => few.iter_mut().find(|(l, _)| &**l == level).map(|(_, n)| n),
            Self::Many(many) => many.get_mut(level),
        }
    }

    pub(crate) fn remove(&mut self, level: &str) {
        match self {
            Self::Few(few) => {
                if let Some(at) = few.iter().position(|(l, _)| &**l == level) {
                    few.swap_remove(at);
                    few.shrink_to_fit();
                }
            }
            Self::Many(many) => {
                many.remove(level);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Few(few) => few.len(),
            Self::Many(many) => many.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every child with its level, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &N)> {
        let (few, many) = match self {
            Self::Few(few) => (Some(few.iter()), None),
            Self::Many(many) => (None, Some(many.iter())),
        };
        few.into_iter()
            .flatten()
            .map(|(l, n)| (&**l, n))
            .chain(many.into_iter().flatten().map(|(l, n)| (&**l, n)))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &N> {
        self.iter().map(|(_, n)| n)
    }

    /// Moves every child out into `into`, leaving none.
    pub(crate) fn drain_into(&mut self, into: &mut Vec<N>) {
        match std::mem::take(self) {
            Self::Few(few) => into.extend(few.into_iter().map(|(_, n)| n)),
            Self::Many(many) => into.extend(many.into_values()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_child_holds_room_for_one() {
        let mut map: ChildMap<u32> = ChildMap::default();
        *map.get_or_default("status") = 7;
        match &map {
            ChildMap::Few(few) => assert_eq!(few.capacity(), 1),
            ChildMap::Many(_) => panic!("one child went to a map"),
        }
        assert_eq!(map.get("status"), Some(&7));
        assert_eq!(map.get("other"), None);
    }

    #[test]
    fn many_children_move_to_a_map_and_stay_reachable() {
        let mut map: ChildMap<usize> = ChildMap::default();
        for i in 0..100 {
            *map.get_or_default(&format!("d{i}")) = i;
        }
        assert!(matches!(map, ChildMap::Many(_)));
        assert_eq!(map.len(), 100);
        for i in 0..100 {
            assert_eq!(map.get(&format!("d{i}")), Some(&i));
        }
    }

    proptest! {
        /// Any sequence of inserts and removals leaves the same children
        /// as a HashMap given the same sequence.
        #[test]
        fn agrees_with_a_hash_map(ops in proptest::collection::vec((0u8..24, any::<bool>()), 0..200)) {
            let mut ours: ChildMap<u32> = ChildMap::default();
            let mut model: HashMap<String, u32> = HashMap::new();
            for (key, insert) in ops {
                let level = format!("l{key}");
                if insert {
                    *ours.get_or_default(&level) += 1;
                    *model.entry(level).or_default() += 1;
                } else {
                    ours.remove(&level);
                    model.remove(&level);
                }
                prop_assert_eq!(ours.len(), model.len());
            }
            let mut got: Vec<(String, u32)> = ours.iter().map(|(l, n)| (l.to_owned(), *n)).collect();
            let mut want: Vec<(String, u32)> = model.into_iter().collect();
            got.sort();
            want.sort();
            prop_assert_eq!(&got, &want);
            let mut drained = Vec::new();
            ours.drain_into(&mut drained);
            prop_assert!(ours.is_empty());
            prop_assert_eq!(drained.len(), want.len());
        }
    }
}
