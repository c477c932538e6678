//! The key-value commands, their preconditions (compare-and-swap) and revisions: the rules
//! both key-value state machines ([`crate::KvStore`] in memory, [`crate::DurableStore`] on
//! disk) apply, in one place so that they cannot disagree.
//!
//! Every key carries a **revision**: the log index of the entry that last wrote it. A
//! write can be made conditional on the key's current value ([`Expect::value`]) or
//! revision ([`Expect::revision`]); a condition that does not hold changes nothing and
//! answers [`KvResponse::PreconditionFailed`] with what the key holds. Conditions are
//! decided when the entry is applied, so every node decides the same.

use bytes::Bytes;
use raft_core::{Entry, EntryKind, LogIndex};
use serde::{Deserialize, Serialize};

/// The revision of a key: the log index of the entry that last wrote it. An absent key has
/// revision 0; so does a key last written by an [unversioned](KvCommand::PutUnversioned)
/// command.
pub type Revision = u64;

/// A value and the revision that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value.
    pub value: String,
    /// The log index of the entry that wrote it (0: written before revisions were kept).
    pub revision: Revision,
}

/// A change applied to the map, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    /// The log index of the write (the key's new revision, for a put).
    pub revision: Revision,
    /// The key.
    pub key: String,
    /// The new value; `None`: the key was deleted.
    pub value: Option<String>,
}

/// What a conditional write requires of the key's current state; every condition given
/// must hold. The default requires nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expect {
    /// `Some(Some(v))`: the key must hold `v`; `Some(None)`: the key must be absent.
    pub value: Option<Option<String>>,
    /// The key's revision must be this; 0 means "absent".
    pub revision: Option<Revision>,
}

impl Expect {
    /// Requires the key to hold `value`.
    pub fn value(value: impl Into<String>) -> Self {
        Expect {
            value: Some(Some(value.into())),
            revision: None,
        }
    }

    /// Requires the key to be absent.
    pub fn absent() -> Self {
        Expect {
            value: Some(None),
            revision: None,
        }
    }

    /// Requires the key's revision to be `revision` (0: absent).
    pub fn revision(revision: Revision) -> Self {
        Expect {
            value: None,
            revision: Some(revision),
        }
    }

    /// Whether the key's current state meets every condition.
    pub fn holds(&self, current: Option<&Versioned>) -> bool {
        let value_ok = match &self.value {
            None => true,
            Some(want) => want.as_deref() == current.map(|c| c.value.as_str()),
        };
        let revision_ok = match self.revision {
            None => true,
            Some(0) => current.is_none(),
            Some(r) => current.is_some_and(|c| c.revision == r),
        };
        value_ok && revision_ok
    }
}

/// A key-value command, carried in an entry of kind [`EntryKind::Command`].
///
/// The variants' order is their encoding: new variants only ever go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// A put written by a build that kept no revisions (still read from old logs): applied
    /// as a put that leaves the key at revision 0, whichever build applies it, so that
    /// every node agrees on revisions across an upgrade.
    PutUnversioned {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A delete written by a build that kept no revisions (still read from old logs).
    DeleteUnversioned {
        /// The key.
        key: String,
    },
    /// Sets `key` to `value` (at the entry's index as revision) if `expect` holds.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The condition; `None` writes unconditionally.
        expect: Option<Expect>,
    },
    /// Removes `key` if `expect` holds.
    Delete {
        /// The key.
        key: String,
        /// The condition; `None` deletes unconditionally.
        expect: Option<Expect>,
    },
}

impl KvCommand {
    /// An unconditional put.
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Self {
        KvCommand::Put {
            key: key.into(),
            value: value.into(),
            expect: None,
        }
    }

    /// An unconditional delete.
    pub fn delete(key: impl Into<String>) -> Self {
        KvCommand::Delete {
            key: key.into(),
            expect: None,
        }
    }

    /// The key the command writes.
    pub fn key(&self) -> &str {
        match self {
            KvCommand::PutUnversioned { key, .. }
            | KvCommand::DeleteUnversioned { key }
            | KvCommand::Put { key, .. }
            | KvCommand::Delete { key, .. } => key,
        }
    }

    /// The entry payload for this command; submit it with
    /// [`crate::RaftNode::submit_command`].
    pub fn encode(&self) -> Result<Bytes, postcard::Error> {
        postcard::to_allocvec(self).map(Bytes::from)
    }

    /// The command in an entry payload, if it decodes as one. Only entries of kind
    /// [`EntryKind::Command`] hold commands: use [`KvCommand::from_entry`] on entries.
    pub fn decode(data: &[u8]) -> Option<KvCommand> {
        postcard::from_bytes(data).ok()
    }

    /// The command an entry holds: only a [`EntryKind::Command`] entry holds one, whatever
    /// the payload of other entries looks like.
    pub fn from_entry(e: &Entry) -> Option<KvCommand> {
        if e.kind == EntryKind::Command {
            Self::decode(&e.data)
        } else {
            None
        }
    }

    /// The value this command writes when it changes the map (`None`: it deletes the key).
    pub(crate) fn new_value(&self) -> Option<&str> {
        match self {
            KvCommand::PutUnversioned { value, .. } | KvCommand::Put { value, .. } => Some(value),
            KvCommand::DeleteUnversioned { .. } | KvCommand::Delete { .. } => None,
        }
    }

    /// What applying this command at `index` does to a key whose state is `current`.
    pub(crate) fn decide(&self, index: LogIndex, current: Option<&Versioned>) -> Outcome {
        let (expect, new) = match self {
            KvCommand::PutUnversioned { value, .. } => (
                None,
                Some(Versioned {
                    value: value.clone(),
                    revision: 0,
                }),
            ),
            KvCommand::DeleteUnversioned { .. } => (None, None),
            KvCommand::Put { value, expect, .. } => (
                expect.as_ref(),
                Some(Versioned {
                    value: value.clone(),
                    revision: index,
                }),
            ),
            KvCommand::Delete { expect, .. } => (expect.as_ref(), None),
        };
        if expect.is_some_and(|x| !x.holds(current)) {
            return Outcome {
                write: None,
                response: KvResponse::PreconditionFailed {
                    current: current.cloned(),
                },
            };
        }
        Outcome {
            write: Some(new),
            response: KvResponse::Applied {
                previous: current.cloned(),
                revision: index,
            },
        }
    }
}

/// What applying a command does: the key's new state (`None` inside: removed), if it
/// changes, and the answer.
pub(crate) struct Outcome {
    pub(crate) write: Option<Option<Versioned>>,
    pub(crate) response: KvResponse,
}

/// What applying an entry did to the key-value map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// The put or delete was applied at log index `revision` (the key's new revision, for
    /// a put); the key's previous state is given.
    Applied {
        /// The value and revision before the command.
        previous: Option<Versioned>,
        /// The index the command was applied at.
        revision: Revision,
    },
    /// The command's condition did not hold: nothing changed. The key's current state is
    /// given.
    PreconditionFailed {
        /// The key's value and revision when the command was applied.
        current: Option<Versioned>,
    },
    /// The entry was not a key-value command (a no-op, a plain log entry, or a command
    /// entry that does not decode as one).
    NotACommand,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(value: &str, revision: Revision) -> Versioned {
        Versioned {
            value: value.into(),
            revision,
        }
    }

    #[test]
    fn an_expected_value_must_match_and_expecting_absence_needs_an_absent_key() {
        assert!(Expect::value("a").holds(Some(&at("a", 3))));
        assert!(!Expect::value("a").holds(Some(&at("b", 3))));
        assert!(!Expect::value("a").holds(None));
        assert!(Expect::absent().holds(None));
        assert!(!Expect::absent().holds(Some(&at("a", 3))));
        assert!(Expect::default().holds(None));
        assert!(Expect::default().holds(Some(&at("a", 3))));
    }

    #[test]
    fn an_expected_revision_must_match_and_revision_zero_means_absent() {
        assert!(Expect::revision(3).holds(Some(&at("a", 3))));
        assert!(!Expect::revision(4).holds(Some(&at("a", 3))));
        assert!(!Expect::revision(3).holds(None));
        assert!(Expect::revision(0).holds(None));
        assert!(
            !Expect::revision(0).holds(Some(&at("a", 0))),
            "a key written before revisions were kept is present, not absent"
        );
        let both = Expect {
            value: Some(Some("a".into())),
            revision: Some(3),
        };
        assert!(both.holds(Some(&at("a", 3))));
        assert!(!both.holds(Some(&at("a", 4))));
        assert!(!both.holds(Some(&at("b", 3))));
    }

    #[test]
    fn a_put_writes_at_its_index_and_a_failed_condition_writes_nothing() {
        let cas = KvCommand::Put {
            key: "k".into(),
            value: "new".into(),
            expect: Some(Expect::value("old")),
        };
        let done = cas.decide(9, Some(&at("old", 4)));
        assert_eq!(done.write, Some(Some(at("new", 9))));
        assert_eq!(
            done.response,
            KvResponse::Applied {
                previous: Some(at("old", 4)),
                revision: 9
            }
        );
        let refused = cas.decide(9, Some(&at("other", 5)));
        assert_eq!(refused.write, None);
        assert_eq!(
            refused.response,
            KvResponse::PreconditionFailed {
                current: Some(at("other", 5))
            }
        );
    }

    #[test]
    fn deletes_remove_and_unversioned_writes_leave_revision_zero() {
        let del = KvCommand::delete("k").decide(7, Some(&at("v", 2)));
        assert_eq!(del.write, Some(None));
        let cond = KvCommand::Delete {
            key: "k".into(),
            expect: Some(Expect::revision(3)),
        };
        assert_eq!(cond.decide(7, Some(&at("v", 2))).write, None);
        let old = KvCommand::PutUnversioned {
            key: "k".into(),
            value: "v".into(),
        };
        assert_eq!(old.decide(7, None).write, Some(Some(at("v", 0))));
        let old_del = KvCommand::DeleteUnversioned { key: "k".into() };
        assert_eq!(old_del.decide(7, Some(&at("v", 2))).write, Some(None));
    }

    #[test]
    fn commands_of_the_build_without_revisions_still_decode_the_same() {
        // What that build encoded for Put { key: "k", value: "v" } and Delete { key: "k" }:
        // variant 0 and 1, then the strings.
        assert_eq!(
            KvCommand::decode(&[0, 1, b'k', 1, b'v']),
            Some(KvCommand::PutUnversioned {
                key: "k".into(),
                value: "v".into()
            })
        );
        assert_eq!(
            KvCommand::decode(&[1, 1, b'k']),
            Some(KvCommand::DeleteUnversioned { key: "k".into() })
        );
        let put = KvCommand::put("k", "v");
        assert_eq!(KvCommand::decode(&put.encode().unwrap()), Some(put));
        assert_eq!(KvCommand::put("a", "b").key(), "a");
    }
}
