use super::codes::*;
use super::*;

const KEY_Y: u16 = 21;
const KEY_1: u16 = 2;
const KEY_ENTER: u16 = 28;

fn key(code: u16, value: u32) -> Event {
    Event::new(EV_KEY, code, value)
}
fn syn() -> Event {
    Event::new(EV_SYN, SYN_REPORT, 0)
}
fn abs(axis: u16, v: u32) -> Event {
    Event::new(EV_ABS, axis, v)
}

fn drain(r: &mut Router, side: Side) -> Vec<Event> {
    let q = r.queue(side);
    std::iter::from_fn(|| q.pop()).collect()
}

fn tap_key(r: &mut Router, code: u16) {
    for e in [key(code, 1), syn(), key(code, 0), syn()] {
        r.route(e);
    }
}

#[test]
fn without_an_approval_the_rich_vm_gets_everything() {
    let mut r = Router::new();
    tap_key(&mut r, KEY_Y);
    assert_eq!(
        drain(&mut r, Side::Rich),
        vec![key(KEY_Y, 1), syn(), key(KEY_Y, 0), syn()]
    );
    assert!(drain(&mut r, Side::Secure).is_empty());
}

#[test]
fn during_an_approval_the_rich_vm_gets_nothing() {
    let mut r = Router::new();
    r.set_focus(Side::Secure);
    tap_key(&mut r, KEY_ENTER);
    for e in [
        abs(ABS_X, 10),
        abs(ABS_Y, 20),
        key(BTN_TOUCH, 1),
        syn(),
        key(BTN_TOUCH, 0),
        syn(),
    ] {
        r.route(e);
    }
    assert!(drain(&mut r, Side::Rich).is_empty());
    assert_eq!(drain(&mut r, Side::Secure).len(), 10);
}

#[test]
fn a_key_held_when_the_path_opens_is_released_for_the_rich_vm_at_once() {
    let mut r = Router::new();
    r.route(key(KEY_Y, 1));
    r.route(syn());
    r.route(key(KEY_1, 1)); // report not finished yet
    r.set_focus(Side::Secure);
    assert_eq!(
        drain(&mut r, Side::Rich),
        vec![
            key(KEY_Y, 1),
            syn(),
            key(KEY_1, 1),
            key(KEY_1, 0),
            key(KEY_Y, 0),
            syn()
        ]
    );
    // Its repeats and its real release go nowhere.
    r.route(key(KEY_Y, 2));
    r.route(syn());
    r.route(key(KEY_Y, 0));
    r.route(syn());
    assert!(drain(&mut r, Side::Rich).is_empty());
    assert!(drain(&mut r, Side::Secure).is_empty());
}

#[test]
fn keys_pressed_on_the_path_never_reach_the_rich_vm_even_after_it() {
    let mut r = Router::new();
    r.set_focus(Side::Secure);
    r.route(key(KEY_1, 1));
    r.route(syn());
    // The prompt ends (rich cancel, answer) while the key is still down.
    r.set_focus(Side::Rich);
    assert!(
        drain(&mut r, Side::Secure).is_empty(),
        "unread secure events dropped"
    );
    r.route(key(KEY_1, 2));
    r.route(syn());
    r.route(key(KEY_1, 0));
    r.route(syn());
    assert!(drain(&mut r, Side::Rich).is_empty());
    // The next key is the rich VM's.
    tap_key(&mut r, KEY_Y);
    assert_eq!(
        drain(&mut r, Side::Rich),
        vec![key(KEY_Y, 1), syn(), key(KEY_Y, 0), syn()]
    );
}

#[test]
fn a_contact_belongs_to_the_side_that_saw_it_start() {
    let mut r = Router::new();
    // Rich contact, then the path opens mid-swipe.
    for e in [
        abs(ABS_X, 1),
        abs(ABS_Y, 2),
        key(BTN_TOUCH, 1),
        syn(),
        abs(ABS_X, 3),
    ] {
        r.route(e);
    }
    r.set_focus(Side::Secure);
    let rich = drain(&mut r, Side::Rich);
    assert_eq!(
        &rich[rich.len() - 3..],
        &[abs(ABS_X, 3), key(BTN_TOUCH, 0), syn()]
    );
    // The rest of that swipe reaches no one, its release included; the
    // secure VM never sees a contact that started before its screen.
    for e in [abs(ABS_X, 4), syn(), key(BTN_TOUCH, 0), syn()] {
        r.route(e);
    }
    assert!(drain(&mut r, Side::Rich).is_empty());
    assert!(drain(&mut r, Side::Secure).is_empty());
    // A new contact is the secure VM's, up to its release after the path
    // closed.
    for e in [abs(ABS_X, 5), key(BTN_TOUCH, 1), syn()] {
        r.route(e);
    }
    assert_eq!(
        drain(&mut r, Side::Secure),
        vec![abs(ABS_X, 5), key(BTN_TOUCH, 1), syn()]
    );
    r.set_focus(Side::Rich);
    for e in [abs(ABS_X, 6), syn(), key(BTN_TOUCH, 0), syn()] {
        r.route(e);
    }
    assert!(
        drain(&mut r, Side::Rich).is_empty(),
        "the tail of a trusted touch leaked"
    );
    for e in [abs(ABS_X, 7), syn()] {
        r.route(e);
    }
    assert_eq!(drain(&mut r, Side::Rich), vec![abs(ABS_X, 7), syn()]);
}

#[test]
fn scan_codes_and_unknown_types_go_nowhere() {
    let mut r = Router::new();
    r.route(Event::new(4, 4, 0x70015)); // EV_MSC MSC_SCAN
    r.route(Event::new(0x1f, 0, 0));
    r.route(syn());
    assert!(drain(&mut r, Side::Rich).is_empty());
}

#[test]
fn out_of_range_key_codes_do_not_panic() {
    let mut r = Router::new();
    for code in [KEY_CNT, KEY_CNT + 1, u16::MAX] {
        r.route(key(code, 1));
        r.route(key(code, 0));
        r.route(key(code, 2));
    }
    r.set_focus(Side::Secure);
    r.set_focus(Side::Rich);
}

#[test]
fn a_full_queue_drops_and_says_so_once() {
    let mut r = Router::new();
    for _ in 0..QUEUE_LEN {
        tap_key(&mut r, KEY_Y);
    }
    let got = drain(&mut r, Side::Rich);
    assert_eq!(got.len(), QUEUE_LEN);
    assert_eq!(got[QUEUE_LEN - 1], Event::new(EV_SYN, SYN_DROPPED, 0));
    assert_eq!(
        got.iter()
            .filter(|e| e.code == SYN_DROPPED && e.kind == EV_SYN)
            .count(),
        1
    );
    // After draining, events flow again.
    tap_key(&mut r, KEY_Y);
    assert_eq!(drain(&mut r, Side::Rich).len(), 4);
}

#[test]
fn wire_format_round_trips() {
    let e = Event::new(EV_ABS, ABS_Y, 0x1234_5678);
    assert_eq!(e.to_bytes(), [3, 0, 1, 0, 0x78, 0x56, 0x34, 0x12]);
    assert_eq!(Event::from_bytes(e.to_bytes()), e);
}

#[test]
fn a_tablet_button_held_when_the_path_opens_is_released_with_its_own_code() {
    // QEMU's virtio tablet reports BTN_LEFT, a touch screen BTN_TOUCH: the
    // rich VM gets the release of the button it saw go down.
    let mut r = Router::new();
    for e in [abs(ABS_X, 5), key(BTN_LEFT, 1), syn()] {
        r.route(e);
    }
    drain(&mut r, Side::Rich);
    r.set_focus(Side::Secure);
    assert_eq!(drain(&mut r, Side::Rich), vec![key(BTN_LEFT, 0), syn()]);
    // The real lift later goes nowhere, and the finger's motion before it
    // neither.
    for e in [abs(ABS_X, 6), key(BTN_LEFT, 0), syn()] {
        r.route(e);
    }
    assert!(drain(&mut r, Side::Rich).is_empty());
    assert!(drain(&mut r, Side::Secure).is_empty());
}
