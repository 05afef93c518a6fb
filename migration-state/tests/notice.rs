// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The migration notice seen from a VMM's migration loop, with an injected clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{mpsc, Mutex};
use std::time::Duration;

use migration_state::notice::{CONTROL_ENABLED, GUEST_CONTROL, VECTOR};
use migration_state::{GuestNotice, NoticeStatus, ProceedReason};
use pci_config::ConfigSpace;

/// A clock the test advances by hand.
struct FakeClock(Duration);

impl FakeClock {
    fn now(&self) -> Duration {
        self.0
    }
    fn advance(&mut self, by: Duration) {
        self.0 += by;
    }
}

/// The device as a VMM holds it: the config space behind the device lock.
struct Device {
    config: Mutex<ConfigSpace>,
}

const TIMEOUT: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(10);

/// How long the migration loop waits for the guest's thread to finish one tick. The guest
/// needs the device lock for its tick: if the loop held it across the wait, the guest could not
/// finish and the loop fails here instead of hanging.
const GUEST_TICK_TIMEOUT: Duration = Duration::from_secs(5);

/// A migration loop: announce, then poll once per tick (taking the device lock only for the
/// poll itself) until told to proceed, while the guest runs on its own thread and takes the
/// same lock for each of its ticks. Returns the reason and the number of polls.
fn run_until_proceed(
    dev: &Device,
    notice: &mut GuestNotice,
    clock: &mut FakeClock,
    guest_tick: impl Fn(&Device, u32) + Send + Sync,
) -> (ProceedReason, u32) {
    let irq = {
        let mut cs = dev.config.lock().unwrap();
        notice.request(&mut cs, clock.now(), TIMEOUT).unwrap()
    };
    assert!(
        irq.is_some(),
        "guest opted in, so the VMM must raise its vector"
    );
    std::thread::scope(|s| {
        let (tick_tx, tick_rx) = mpsc::channel::<u32>();
        let (done_tx, done_rx) = mpsc::channel::<u32>();
        let guest = &guest_tick;
        s.spawn(move || {
            // The guest: one tick each time the loop hands it the turn, under the device lock.
            for poll in tick_rx {
                guest(dev, poll);
                if done_tx.send(poll).is_err() {
                    return;
                }
            }
        });
        let mut polls = 0;
        loop {
            let status = {
                let cs = dev.config.lock().unwrap();
                notice.poll(&cs, clock.now())
            };
            polls += 1;
            match status {
                NoticeStatus::Proceed(reason) => {
                    // Ends the guest's thread.
                    drop(tick_tx);
                    return (reason, polls);
                }
                NoticeStatus::Waiting { deadline } => {
                    assert!(deadline >= clock.now());
                    // The guest takes its turn on its own thread: it can, because the loop
                    // holds no lock while it waits.
                    tick_tx.send(polls).unwrap();
                    let done = done_rx.recv_timeout(GUEST_TICK_TIMEOUT);
                    assert_eq!(done, Ok(polls), "the guest could not take its turn");
                    clock.advance(TICK);
                }
                NoticeStatus::Idle => panic!("notice went idle while pending"),
            }
        }
    })
}

/// One guest tick: the guest driver reads its notice registers under the device lock, as
/// its config accesses would, and acknowledges on `ack_on`.
fn guest_reads_and_acks_on(
    ack_on: Option<u32>,
    base: usize,
    generation: u32,
) -> impl Fn(&Device, u32) + Send + Sync {
    move |d, poll| {
        let mut cs = d.config.lock().unwrap();
        let mut status = [0u8; 1];
        cs.read(base + migration_state::notice::HOST_STATUS, &mut status)
            .unwrap();
        assert_eq!(status[0], 1, "the guest sees a migration pending");
        if ack_on == Some(poll) {
            cs.write(
                base + migration_state::notice::GUEST_ACK,
                &generation.to_le_bytes(),
            )
            .unwrap();
        }
    }
}

fn opted_in_device() -> (Device, GuestNotice) {
    let mut cs = ConfigSpace::new_conventional();
    let notice = GuestNotice::insert(&mut cs).unwrap();
    let base = usize::from(notice.offset());
    cs.write(base + VECTOR, &3u16.to_le_bytes()).unwrap();
    cs.write(base + GUEST_CONTROL, &[CONTROL_ENABLED]).unwrap();
    (
        Device {
            config: Mutex::new(cs),
        },
        notice,
    )
}

#[test]
fn guest_that_never_answers_does_not_stall_migration() {
    let (dev, mut notice) = opted_in_device();
    let base = usize::from(notice.offset());
    let mut clock = FakeClock(Duration::from_secs(100));
    let start = clock.now();
    let guest = guest_reads_and_acks_on(None, base, 0);
    let (reason, polls) = run_until_proceed(&dev, &mut notice, &mut clock, guest);
    assert_eq!(reason, ProceedReason::DeadlineExpired);
    // It proceeds exactly at the deadline: TIMEOUT / TICK waiting polls, then the deciding one.
    let expected_polls = (TIMEOUT.as_millis() / TICK.as_millis()) as u32 + 1;
    assert_eq!(polls, expected_polls);
    assert_eq!(clock.now() - start, TIMEOUT);
}

#[test]
fn guest_that_answers_lets_migration_proceed_early() {
    let (dev, mut notice) = opted_in_device();
    let base = usize::from(notice.offset());
    let mut clock = FakeClock(Duration::ZERO);
    let generation = notice.generation() + 1;
    // The guest acknowledges on its third turn, through an ordinary config write from its own
    // thread.
    let guest = guest_reads_and_acks_on(Some(3), base, generation);
    let (reason, polls) = run_until_proceed(&dev, &mut notice, &mut clock, guest);
    assert_eq!(reason, ProceedReason::Acknowledged);
    assert_eq!(polls, 4);
    assert!(clock.now() < TIMEOUT);
}
