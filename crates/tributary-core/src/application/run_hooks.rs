//! The pairing of `before_run` and `after_run`: every run that told its
//! hooks it started tells them exactly once how it ended, abandoned
//! included.

use std::sync::Arc;

use crate::error::{ApplicationError, HookMethod, HookPanic};
use crate::hooks::{HookList, call_hooks};
use crate::identity::AppInfo;
use crate::outcome::RunOutcome;
use crate::state::State;

/// A run its hooks were told about; dropping it before [`end`](Self::end)
/// tells them the run was abandoned.
pub(super) struct RunHooks {
    app: Arc<AppInfo>,
    hooks: HookList,
    armed: bool,
}

impl RunHooks {
    /// Tell the hooks a run starts.
    ///
    /// A panicking `before_run` ends the run at once: every hook is told
    /// with `after_run`, and the panic is the error.
    pub(super) fn begin(
        app: &Arc<AppInfo>,
        hooks: &HookList,
        state: &State,
    ) -> Result<Self, ApplicationError> {
        let this = RunHooks {
            app: Arc::clone(app),
            hooks: Arc::clone(hooks),
            armed: !hooks.is_empty(),
        };
        if !this.armed {
            return Ok(this);
        }
        match call_hooks(hooks, HookMethod::BeforeRun, |hook| {
            hook.before_run(app, state)
        }) {
            Ok(()) => Ok(this),
            Err(panic) => {
                let error = ApplicationError::Hook(panic);
                let _ = this.tell(Err(&error));
                Err(error)
            }
        }
    }

    /// Tell the hooks (once) how the run ended.
    fn tell(mut self, result: Result<&RunOutcome, &ApplicationError>) -> Result<(), HookPanic> {
        if !std::mem::replace(&mut self.armed, false) {
            return Ok(());
        }
        call_hooks(&self.hooks, HookMethod::AfterRun, |hook| {
            hook.after_run(&self.app, result)
        })
    }

    /// Tell the hooks how the run ended; returns the run's result, or the
    /// panic of an `after_run` hook when the run itself succeeded (a failed
    /// run keeps its own error; the panic is logged).
    pub(super) fn end(
        self,
        result: Result<RunOutcome, ApplicationError>,
    ) -> Result<RunOutcome, ApplicationError> {
        let called = self.tell(result.as_ref());
        match (result, called) {
            (Ok(_), Err(panic)) => Err(ApplicationError::Hook(panic)),
            (result, _) => result,
        }
    }
}

impl Drop for RunHooks {
    fn drop(&mut self) {
        if self.armed {
            let abandoned = ApplicationError::Abandoned {
                app_id: self.app.app_id.clone(),
            };
            // Nobody is left to hand a panic to: `call_hooks` logs it.
            let _ = call_hooks(&self.hooks, HookMethod::AfterRun, |hook| {
                hook.after_run(&self.app, Err(&abandoned))
            });
        }
    }
}
