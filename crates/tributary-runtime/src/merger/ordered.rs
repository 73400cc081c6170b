//! `Ordered`: all items of task 0, then all of task 1, ...
//!
//! Only the front task's items can be handed over, so the front task
//! streams through the run's mailbox (ample room, few hand-offs between its
//! worker and the consumer), and every task behind it into its own small
//! channel (see `LaneReceiver::poll_front`).

use std::task::{Context, Poll};

use super::RunStream;

impl RunStream {
    pub(super) fn poll_ordered(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(lane) = self.lanes.front_mut() else {
            return false;
        };
        match lane.poll_front(&mut self.mail, cx) {
            Poll::Ready(env) => {
                if env.terminal {
                    self.lanes.pop_front();
                    // The next task streams through the mailbox from now on,
                    // not from the consumer's next read.
                    if let Some(next) = self.lanes.front_mut() {
                        next.bring_to_front();
                    }
                } else {
                    self.decide(&env.item);
                }
                self.emit(env);
                true
            }
            Poll::Pending => false,
        }
    }
}
