// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The migration notice seen from a VMM's migration loop, with an injected clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Mutex;
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

/// A migration loop: announce, then poll once per tick (taking the device lock only for the
/// poll itself) until told to proceed. Returns the reason and the number of polls.
fn run_until_proceed(
    dev: &Device,
    notice: &mut GuestNotice,
    clock: &mut FakeClock,
    mut guest_tick: impl FnMut(&Device, u32),
) -> (ProceedReason, u32) {
    let irq = {
        let mut cs = dev.config.lock().unwrap();
        notice.request(&mut cs, clock.now(), TIMEOUT).unwrap()
    };
    assert!(
        irq.is_some(),
        "guest opted in, so the VMM must raise its vector"
    );
    let mut polls = 0;
    loop {
        let status = {
            let cs = dev.config.lock().unwrap();
            notice.poll(&cs, clock.now())
        };
        polls += 1;
        match status {
            NoticeStatus::Proceed(reason) => return (reason, polls),
            NoticeStatus::Waiting { deadline } => {
                assert!(deadline >= clock.now());
                // The lock is released here: the guest can always make progress.
                assert!(dev.config.try_lock().is_ok());
                guest_tick(dev, polls);
                clock.advance(TICK);
            }
            NoticeStatus::Idle => panic!("notice went idle while pending"),
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
    let mut clock = FakeClock(Duration::from_secs(100));
    let start = clock.now();
    let (reason, polls) = run_until_proceed(&dev, &mut notice, &mut clock, |_, _| {});
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
    // The guest acknowledges on its third chance, through an ordinary config write.
    let (reason, polls) = run_until_proceed(&dev, &mut notice, &mut clock, |d, poll| {
        if poll == 3 {
            let mut cs = d.config.lock().unwrap();
            cs.write(
                base + migration_state::notice::GUEST_ACK,
                &generation.to_le_bytes(),
            )
            .unwrap();
        }
    });
    assert_eq!(reason, ProceedReason::Acknowledged);
    assert_eq!(polls, 4);
    assert!(clock.now() < TIMEOUT);
}
