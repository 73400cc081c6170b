//! `Ordered`: all items of task 0, then all of task 1, ...

use std::task::{Context, Poll};

use super::RunStream;

impl RunStream {
    pub(super) fn poll_ordered(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(lane) = self.lanes.front_mut() else {
            return false;
        };
        match lane.poll_next(cx) {
            Poll::Ready(Some(env)) => {
                if env.terminal {
                    self.lanes.pop_front();
                } else {
                    self.decide(&env.item);
                }
                self.emit(env);
                true
            }
            Poll::Ready(None) => true,
            Poll::Pending => false,
        }
    }
}
