//! `Zip`: round `r` holds the `r`-th item of every task of a cohort.

use std::task::{Context, Poll};

use super::RunStream;
use crate::item::StreamItem;

/// One round of a [`MergeMode::Zip`](crate::MergeMode::Zip) run: the `index`-th item of every task
/// of the cohort, in task order; `None` for a task that already ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Round {
    /// The zip cohort (tasks `cohort * c .. (cohort + 1) * c` for a limit `c`).
    pub cohort: u64,
    /// The round's number within its cohort, from 0 (`seq` of its items).
    pub index: u64,
    /// One slot per task of the cohort, in task order.
    pub slots: Vec<Option<StreamItem>>,
}

impl RunStream {
    pub(super) fn poll_zip(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(cohort) = self.lanes.front().map(|l| l.cohort) else {
            return false;
        };
        if cohort >= self.sealed {
            return false;
        }
        let members = self.lanes.iter().take_while(|l| l.cohort == cohort).count();
        let mut progressed = false;
        let mut complete = true;
        for lane in self.lanes.iter_mut().take(members) {
            if lane.done || lane.buffered.is_some() {
                continue;
            }
            match lane.poll_next(cx) {
                Poll::Ready(Some(env)) => {
                    lane.buffered = Some(env);
                    progressed = true;
                }
                Poll::Ready(None) => {
                    progressed = true;
                    complete = false;
                }
                Poll::Pending => complete = false,
            }
        }
        if !complete {
            return progressed;
        }
        let mut slots = Vec::with_capacity(members);
        let mut taken = Vec::new();
        for lane in self.lanes.iter_mut().take(members) {
            match lane.buffered.take() {
                None => slots.push(None),
                Some(env) => {
                    lane.done |= env.terminal;
                    slots.push(Some(env.item.clone()));
                    taken.push(env);
                }
            }
        }
        for env in taken {
            if !env.terminal {
                self.decide(&env.item);
            }
            self.account(env);
        }
        self.rounds.push_back(Round {
            cohort,
            index: self.round,
            slots,
        });
        self.round += 1;
        if self.lanes.iter().take(members).all(|l| l.done) {
            self.lanes.drain(..members);
            self.round = 0;
        }
        true
    }
}
