//! An operator's hold: held recipients are kept and never due, across a
//! restart, until released; a hold takes a waiting message from its
//! holder but leaves one being sent alone.

mod common;

use common::{message, open, runtime};
use queue::{RecipientState, RecipientStatus, Timestamp};

fn delivered() -> RecipientStatus {
    RecipientStatus {
        state: RecipientState::Delivered,
        attempts: 1,
        next_attempt: Timestamp::default(),
        last_reply: Some("250 ok".into()),
    }
}

#[test]
fn held_recipients_are_never_due_until_released_and_the_hold_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let id = rt.block_on(q.enqueue(message(1, 3))).unwrap();
    let now = message(1, 3).first_attempt;
    let due = q.take_due(now, 10);
    assert_eq!(due.len(), 1);
    let handout = due[0].handout;
    assert!(q.begin(id, handout).is_some());
    let tried = RecipientStatus {
        state: RecipientState::Pending,
        attempts: 1,
        next_attempt: now,
        last_reply: Some("451 4.7.1 try later".into()),
    };
    rt.block_on(q.update(id, vec![(0, tried), (1, delivered())]))
        .unwrap();
    q.end(id);

    assert_eq!(rt.block_on(q.hold(id)).unwrap(), 2, "the two still pending");
    assert_eq!(rt.block_on(q.hold(id)).unwrap(), 0, "already held");
    let far = Timestamp::from_millis(now.as_millis() + 10 * 365 * 86_400_000);
    assert!(q.take_due(far, 10).is_empty(), "held: never due");
    assert_eq!(q.next_due(), None);
    let stats = q.stats();
    assert_eq!((stats.messages, stats.recipients, stats.held), (1, 0, 2));
    assert!(q.get(id).unwrap().is_held());
    q.close();
    drop(q);

    let (q, report) = open(dir.path());
    assert_eq!(report.messages, 1, "a held message is recovered");
    assert!(q.take_due(far, 10).is_empty(), "still held after a restart");
    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    assert_eq!(rt.block_on(q.release_held(id, later)).unwrap(), 2);
    assert_eq!(rt.block_on(q.release_held(id, later)).unwrap(), 0);
    assert_eq!(q.next_due(), Some(later));
    let info = q.get(id).unwrap();
    assert_eq!(info.statuses[1], delivered(), "a delivered one stays so");
    assert_eq!(info.statuses[0].attempts, 1, "attempts are kept");
    assert_eq!(
        info.statuses[0].last_reply.as_deref(),
        Some("451 4.7.1 try later")
    );
    assert_eq!(q.stats().held, 0);
    q.close();
    drop(q);
    let (q, _) = open(dir.path());
    assert_eq!(q.next_due(), Some(later), "the release is durable");
}

#[test]
fn a_hold_takes_a_waiting_message_from_its_holder_but_not_one_being_sent() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let waiting = rt.block_on(q.enqueue(message(1, 1))).unwrap();
    let sending = rt.block_on(q.enqueue(message(2, 1))).unwrap();
    let now = message(2, 1).first_attempt;
    let due = q.take_due(now, 10);
    assert_eq!(due.len(), 2);
    let handout = |id| due.iter().find(|m| m.id == id).unwrap().handout;
    assert!(q.begin(sending, handout(sending)).is_some());

    let disturbed = q.disturbed();
    assert_eq!(rt.block_on(q.hold(waiting)).unwrap(), 1);
    assert!(q.disturbed() > disturbed, "its holder is told");
    assert!(
        !q.is_current(waiting, handout(waiting)),
        "the hand-out is stale"
    );
    assert!(q.begin(waiting, handout(waiting)).is_none());

    assert_eq!(rt.block_on(q.hold(sending)).unwrap(), 0, "being sent");
    assert!(q.is_current(sending, handout(sending)));
    rt.block_on(q.update(sending, vec![(0, delivered())]))
        .unwrap();
    q.end(sending);
    assert!(
        q.get(sending).is_none(),
        "its delivery is recorded as usual"
    );

    assert_eq!(rt.block_on(q.release_held(waiting, now)).unwrap(), 1);
    assert_eq!(q.take_due(now, 10).len(), 1, "due again once released");
}

#[test]
fn a_message_whose_last_pending_recipient_ends_while_others_are_held_stays() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (q, _) = open(dir.path());
    let id = rt.block_on(q.enqueue(message(1, 2))).unwrap();
    assert_eq!(rt.block_on(q.hold(id)).unwrap(), 2);
    // An operator's bounce or a drain may end a held recipient directly.
    rt.block_on(q.update(id, vec![(0, delivered())])).unwrap();
    assert_eq!(q.stats().held, 1);
    assert!(q.get(id).is_some(), "one recipient is still held");
    rt.block_on(q.update(id, vec![(1, delivered())])).unwrap();
    assert!(q.get(id).is_none(), "nothing left to do: gone");
    assert_eq!(q.stats().held, 0);
}
