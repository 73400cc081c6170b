//! `AsCompleted` (and `FinalOnly`, which is `AsCompleted` over terminal
//! items only): every item in arrival order, each task's items in order.

use std::task::{Context, Poll};

use super::RunStream;

impl RunStream {
    pub(super) fn poll_mail(&mut self, cx: &mut Context<'_>) -> bool {
        match self.mail.poll_recv(cx) {
            Poll::Ready(Some(env)) => {
                let index = env.index;
                if env.terminal {
                    self.on_arrival(&env.item);
                    self.emit(env);
                } else {
                    self.decide(&env.item);
                    let parked = self.reorder.delivered(index);
                    self.emit(env);
                    if let Some(parked) = parked {
                        self.emit(parked);
                    }
                }
                true
            }
            Poll::Ready(None) | Poll::Pending => false,
        }
    }
}
