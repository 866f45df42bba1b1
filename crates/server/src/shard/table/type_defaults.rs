//! The type-defaults family: options a task of a type takes where its submit gives none,
//! set and cleared by `SetTypeDefaults`, bounded in number.

use super::TaskTable;
use crate::shard::Applied;
use dtc_proto::{TaskOptions, WireError};

/// The most task types with defaults of their own.
pub const MAX_TYPE_DEFAULTS: usize = 256;

impl TaskTable {
    /// The options tasks of type `kind` take where their submit gives none.
    pub fn type_defaults(&self, kind: &str) -> Option<&TaskOptions> {
        let all = &self.settings.type_defaults;
        all.binary_search_by(|(k, _)| k.as_str().cmp(kind))
            .ok()
            .map(|i| &all[i].1)
    }

    /// Every task type's defaults.
    pub fn all_type_defaults(&self) -> &[(String, TaskOptions)] {
        &self.settings.type_defaults
    }

    pub(super) fn set_type_defaults(
        &mut self,
        kind: String,
        options: Option<TaskOptions>,
    ) -> Applied {
        let all = &mut self.settings.type_defaults;
        match (
            all.binary_search_by(|(k, _)| k.as_str().cmp(&kind)),
            options,
        ) {
            (Ok(i), Some(o)) => all[i].1 = o,
            (Ok(i), None) => {
                all.remove(i);
            }
            (Err(_), Some(_)) if all.len() >= MAX_TYPE_DEFAULTS => {
                let reason = format!(
                    "at most {MAX_TYPE_DEFAULTS} task types may have defaults; clear one first"
                );
                return Applied::TypeDefaults(Err(WireError::BadRequest { reason }));
            }
            (Err(i), Some(o)) => all.insert(i, (kind, o)),
            (Err(_), None) => {}
        }
        Applied::TypeDefaults(Ok(all.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::shard::{Command, Retention};
    use dtc_proto::*;

    #[test]
    fn a_types_defaults_fill_what_its_submits_leave_out() {
        let mut t = TaskTable::new(Retention::default());
        let defaults = TaskOptions {
            timeout_ms: Some(5_000),
            backoff: Some(EXACT),
            ..TaskOptions::default()
        };
        let set = t.apply(Command::SetTypeDefaults {
            kind: "noop".into(),
            options: Some(Box::new(defaults.clone())),
        });
        assert_eq!(
            set,
            Applied::TypeDefaults(Ok(vec![("noop".into(), defaults)]))
        );
        submit(&mut t, 1, 3);
        let own = spec(2, 3).with_timeout(std::time::Duration::from_millis(7));
        t.apply(Command::Submit {
            spec: own,
            at_ms: 0,
        });
        assert_eq!(t.timing(TaskId(1)).and_then(|t| t.timeout_ms), Some(5_000));
        assert_eq!(
            t.timing(TaskId(2)).and_then(|t| t.timeout_ms),
            Some(7),
            "its own wins"
        );
        assert_eq!(t.apply(fail(1, 1, 10)), Applied::Waiting(TaskId(1)));
        assert_eq!(
            t.timing(TaskId(1)).map(|t| t.due_ms),
            Some(110),
            "the type's backoff"
        );
        t.apply(Command::SetTypeDefaults {
            kind: "noop".into(),
            options: None,
        });
        assert!(t.all_type_defaults().is_empty());
        submit(&mut t, 3, 3);
        assert_eq!(t.timing(TaskId(3)).and_then(|t| t.timeout_ms), None);
    }
}
