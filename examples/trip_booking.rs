//! A trip booking saga as a durable workflow: reserve a car, a hotel and a
//! flight; when a booking fails for good, undo the ones that succeeded, in
//! reverse order, each exactly once.
//!
//! Every reservation and every undo is a journaled step (SQLite, in a
//! temporary file), so starting the same trip again (after a crash, or
//! twice by mistake) neither books nor cancels anything a second time.
//!
//! Run with `cargo run -p tributary-examples --example trip_booking`.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tributary::BoxError;
use tributary::durable::{DurableError, DurableExt, Terminal, WorkflowContext, Workflows};
use tributary::sqlite::SqliteJournal;

/// The outside world: a booking service that logs every call it gets.
#[derive(Default)]
struct Agency {
    calls: Mutex<Vec<String>>,
}

impl Agency {
    async fn book(&self, what: &str, trip: &str, key: &str) -> Result<String, BoxError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("book {what} for {trip}"));
        if what == "flight" && trip.contains("sold-out") {
            // Not worth retrying: the flight is full.
            return Err(Terminal::new("no seats left on the flight").into());
        }
        // A real service would deduplicate requests on `key` (the same on
        // every retry and replay of this step); here it names the booking.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Ok(format!("{what}-{:06x}", hash & 0xff_ffff))
    }

    async fn cancel(&self, reservation: &str) -> Result<(), BoxError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("cancel {reservation}"));
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Trip {
    Booked {
        car: String,
        hotel: String,
        flight: String,
    },
    Undone {
        reason: String,
        cancelled: usize,
    },
}

async fn book_trip(ctx: WorkflowContext, agency: Arc<Agency>) -> Result<Trip, BoxError> {
    let trip = ctx.workflow_id().to_owned();
    let mut booked = Vec::new();
    for what in ["car", "hotel", "flight"] {
        let (a, undo, t) = (agency.clone(), agency.clone(), trip.clone());
        let reservation = ctx
            .step_with(what, move |attempt| {
                let (a, t) = (a.clone(), t.clone());
                async move { a.book(what, &t, &attempt.idempotency_key).await }
            })
            .compensate(move |id: &String| {
                let id = id.clone();
                async move { undo.cancel(&id).await }
            })
            .await;
        match reservation {
            Ok(id) => booked.push(id),
            Err(DurableError::Compensated {
                error, compensated, ..
            }) => {
                return Ok(Trip::Undone {
                    reason: error,
                    cancelled: compensated,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let [car, hotel, flight] = <[String; 3]>::try_from(booked).expect("three bookings");
    Ok(Trip::Booked { car, hotel, flight })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("trip-booking-{}.db", std::process::id()));
    let agency = Arc::new(Agency::default());
    let workflows = Workflows::new(Arc::new(SqliteJournal::open(&path).await?));
    {
        let agency = agency.clone();
        workflows.register("book_trip", move |ctx: WorkflowContext, ()| {
            book_trip(ctx, agency.clone())
        });
    }

    let ok = workflows.start("book_trip", "trip-lisbon", ()).await?;
    println!("trip-lisbon: {:?}", ok.result::<Trip>().await?);

    let sold_out = workflows.start("book_trip", "trip-sold-out", ()).await?;
    println!("trip-sold-out: {:?}", sold_out.result::<Trip>().await?);

    // Started again: the stored outcome, no call to the agency.
    let again = workflows.start("book_trip", "trip-sold-out", ()).await?;
    println!("trip-sold-out again: {:?}", again.result::<Trip>().await?);

    let calls = agency.calls.lock().unwrap().clone();
    println!("\nthe agency saw:");
    for call in &calls {
        println!("  {call}");
    }
    let sold_out_calls: Vec<&String> = calls
        .iter()
        .filter(|c| c.contains("sold-out") || c.starts_with("cancel"))
        .collect();
    assert_eq!(
        sold_out_calls.len(),
        5,
        "three bookings, two undos: {sold_out_calls:?}"
    );
    assert!(sold_out_calls[3].starts_with("cancel hotel-"));
    assert!(sold_out_calls[4].starts_with("cancel car-"));

    drop(workflows);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
