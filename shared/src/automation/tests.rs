use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::evaluate::{CompiledRule, Outcome, compile};
use super::*;
use crate::contact::{Consent, Contact};
use crate::conversation::Conversation;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn spec(v: Value) -> RuleSpec {
    let mut spec: RuleSpec = serde_json::from_value(v).unwrap();
    spec.validate().unwrap();
    spec
}

fn rule(id: &str, v: Value) -> Rule {
    Rule {
        tenant_id: "t1".into(),
        rule_id: id.into(),
        spec: spec(v),
        version: 1,
        created_at: at("2026-01-01T00:00:00Z"),
        updated_at: at("2026-01-01T00:00:00Z"),
    }
}

fn text_reply(body: &str) -> Value {
    json!({"type": "reply", "message": {"type": "text", "text": {"body": body}}})
}

fn keyword(id: &str, priority: i32, words: &[&str]) -> Rule {
    rule(
        id,
        json!({"name": id, "priority": priority, "trigger": {"type": "keyword", "match": "contains", "keywords": words},
               "actions": [text_reply(id)]}),
    )
}

fn contact(now: DateTime<Utc>) -> Contact {
    Contact {
        contact_id: "c1".into(),
        tenant_id: "t1".into(),
        phone: Some("+4915112345678".into()),
        user_id: None,
        name: None,
        profile_name: None,
        email: None,
        language: Some("de".into()),
        tags: vec!["vip".into()],
        attributes: [("plan".to_owned(), "gold".to_owned())].into(),
        consent: Consent::default(),
        restricted: false,
        last_inbound_at: Some(now),
        last_number: Some("pn1".into()),
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

fn conversation(now: DateTime<Utc>) -> Conversation {
    let mut c = Conversation::new("t1", "c1", "pn1", now);
    c.window_expires_at = Some(now + Duration::hours(24));
    c.last_inbound_at = Some(now);
    c.last_seq = 1;
    c
}

struct World {
    contact: Option<Contact>,
    conversation: Option<Conversation>,
    state: ContactState,
    new_contact: bool,
    fired_today: u64,
    now: DateTime<Utc>,
}

impl World {
    fn new() -> World {
        let now = at("2026-12-01T10:00:00Z");
        World {
            contact: Some(contact(now)),
            conversation: Some(conversation(now)),
            state: ContactState::default(),
            new_contact: false,
            fired_today: 0,
            now,
        }
    }

    fn eval(&self, rules: &[CompiledRule], text: &str) -> Evaluation {
        evaluate(
            rules,
            &Facts {
                message_id: "m1",
                text: Some(text),
                contact: self.contact.as_ref(),
                conversation: self.conversation.as_ref(),
                state: &self.state,
                new_contact: self.new_contact,
                fired_today: self.fired_today,
                daily_cap: 10,
                now: self.now,
                waiting_since: None,
            },
        )
    }

    /// As the no-reply sweep evaluates the conversation's waiting period at `self.now`.
    fn sweep(&self, rules: &[CompiledRule]) -> Evaluation {
        let conversation = self.conversation.as_ref().unwrap();
        let since = conversation.no_reply_waiting_since().unwrap();
        let period = waiting_period_id(&conversation.conversation_id, since);
        evaluate(
            rules,
            &Facts {
                message_id: &period,
                text: None,
                contact: self.contact.as_ref(),
                conversation: Some(conversation),
                state: &self.state,
                new_contact: false,
                fired_today: self.fired_today,
                daily_cap: 10,
                now: self.now,
                waiting_since: Some(since),
            },
        )
    }
}

fn fired_ids(e: &Evaluation) -> Vec<&str> {
    e.fired().map(|(v, _)| v.rule_id.as_str()).collect()
}

fn outcome_of<'a>(e: &'a Evaluation, id: &str) -> &'a Outcome {
    &e.verdicts.iter().find(|v| v.rule_id == id).unwrap().outcome
}

#[test]
fn keyword_rules_by_priority_first_match_wins_unless_continue() {
    let w = World::new();
    let rules = compile(vec![
        keyword("b", 2, &["price"]),
        keyword("a", 1, &["price", "cost"]),
        keyword("c", 3, &["hours"]),
    ]);
    let e = w.eval(&rules, "What's the PRICE?");
    assert_eq!(fired_ids(&e), ["a"]);
    assert_eq!(outcome_of(&e, "b"), &Outcome::Skipped);
    assert_eq!(e.verdicts[0].matched.as_deref(), Some("price"));

    let mut cont = keyword("a", 1, &["price"]);
    cont.spec.continue_after = true;
    let rules = compile(vec![cont, keyword("b", 2, &["price"])]);
    assert_eq!(fired_ids(&w.eval(&rules, "price")), ["a", "b"]);
    // Disabled rules are not evaluated at all.
    let mut off = keyword("a", 1, &["price"]);
    off.spec.enabled = false;
    assert_eq!(
        fired_ids(&w.eval(&compile(vec![off, keyword("b", 2, &["price"])]), "price")),
        ["b"]
    );
}

#[test]
fn stages_run_keyword_then_welcome_then_away() {
    let mut w = World::new();
    w.new_contact = true;
    w.now = at("2026-12-01T22:00:00Z"); // Tuesday 23:00 in Berlin: closed.
    let welcome = rule(
        "w",
        json!({"name": "w", "priority": -5, "trigger": {"type": "welcome"}, "actions": [text_reply("hi")]}),
    );
    let away = rule(
        "x",
        json!({"name": "x", "priority": -10, "trigger": {"type": "away", "time_zone": "Europe/Berlin",
               "hours": {"tue": ["09:00", "17:00"]}}, "actions": [text_reply("closed")]}),
    );
    let rules = compile(vec![away.clone(), welcome.clone(), keyword("k", 100, &["price"])]);
    // Priorities order only within a stage: the keyword rule runs first and wins.
    assert_eq!(fired_ids(&w.eval(&rules, "price")), ["k"]);
    assert_eq!(fired_ids(&w.eval(&rules, "hello")), ["w"]);
    w.new_contact = false;
    assert_eq!(fired_ids(&w.eval(&rules, "hello")), ["x"]);
    w.now = at("2026-12-01T10:00:00Z"); // 11:00 in Berlin: open.
    assert_eq!(fired_ids(&w.eval(&rules, "hello")), Vec::<&str>::new());
    assert_eq!(
        outcome_of(&w.eval(&rules, "hello"), "x"),
        &Outcome::NotTriggered("inside business hours")
    );
}

#[test]
fn consent_keywords_erased_and_restricted_contacts_silence_every_rule() {
    let mut w = World::new();
    let rules = compile(vec![
        keyword("k", 1, &["stop", "start"]),
        rule(
            "w",
            json!({"name": "w", "trigger": {"type": "welcome"}, "actions": [text_reply("hi")]}),
        ),
    ]);
    for word in ["STOP", "stop!", "Start"] {
        let e = w.eval(&rules, word);
        assert!(fired_ids(&e).is_empty(), "{word}");
        assert_eq!(outcome_of(&e, "k"), &Outcome::Suppressed(Reason::ConsentKeyword));
    }
    w.contact.as_mut().unwrap().restricted = true;
    assert_eq!(
        outcome_of(&w.eval(&rules, "stop it"), "k"),
        &Outcome::Suppressed(Reason::ContactRestricted)
    );
    w.contact = None;
    assert_eq!(
        outcome_of(&w.eval(&rules, "stop it"), "k"),
        &Outcome::Suppressed(Reason::ContactErased)
    );
}

#[test]
fn conditions_must_all_hold() {
    let w = World::new();
    let with = |conditions: Value| {
        compile(vec![rule(
            "r",
            json!({"name": "r", "trigger": {"type": "keyword", "match": "exact", "keywords": ["hi"]},
                   "conditions": conditions, "actions": [text_reply("x")], "suppress_when_assigned": false}),
        )])
    };
    assert_eq!(
        fired_ids(&w.eval(&with(json!({"tags_any": ["VIP", "b"]})), "hi")),
        ["r"]
    );
    assert_eq!(
        outcome_of(&w.eval(&with(json!({"tags_any": ["b"]})), "hi"), "r"),
        &Outcome::ConditionsUnmet("tags_any")
    );
    assert_eq!(
        outcome_of(&w.eval(&with(json!({"tags_none": ["vip"]})), "hi"), "r"),
        &Outcome::ConditionsUnmet("tags_none")
    );
    assert_eq!(
        fired_ids(&w.eval(&with(json!({"attributes": {"plan": "gold"}})), "hi")),
        ["r"]
    );
    assert_eq!(
        outcome_of(&w.eval(&with(json!({"attributes": {"plan": "free"}})), "hi"), "r"),
        &Outcome::ConditionsUnmet("attributes")
    );
    assert_eq!(
        outcome_of(&w.eval(&with(json!({"consent": "opted_in"})), "hi"), "r"),
        &Outcome::ConditionsUnmet("consent")
    );
    assert_eq!(
        fired_ids(&w.eval(
            &with(json!({"conversation_status": ["open"], "assignee": "nobody", "window_open": true})),
            "hi"
        )),
        ["r"]
    );
    assert_eq!(
        outcome_of(&w.eval(&with(json!({"assignee": "anyone"})), "hi"), "r"),
        &Outcome::ConditionsUnmet("assignee")
    );
    // An unmet condition is not a match: the next rule still runs.
    let rules = compile(vec![
        rule(
            "a",
            json!({"name": "a", "priority": 1, "trigger": {"type": "keyword", "match": "exact", "keywords": ["hi"]},
                          "conditions": {"tags_any": ["nope"]}, "actions": [text_reply("x")]}),
        ),
        keyword("b", 2, &["hi"]),
    ]);
    assert_eq!(fired_ids(&w.eval(&rules, "hi")), ["b"]);
}

#[test]
fn keyword_rules_per_language() {
    let w = World::new();
    let rules = compile(vec![
        rule(
            "es",
            json!({"name": "es", "trigger": {"type": "keyword", "match": "exact", "keywords": ["hola"], "language": "es"}, "actions": [text_reply("x")]}),
        ),
        rule(
            "de",
            json!({"name": "de", "trigger": {"type": "keyword", "match": "exact", "keywords": ["hola"], "language": "de"}, "actions": [text_reply("x")]}),
        ),
    ]);
    assert_eq!(fired_ids(&w.eval(&rules, "¡Hola")), Vec::<&str>::new());
    assert_eq!(fired_ids(&w.eval(&rules, "hola")), ["de"]);
}

#[test]
fn guardrails_cooldown_human_reply_assignment_and_cap() {
    let mut w = World::new();
    let rules = compile(vec![keyword("k", 1, &["price"])]);
    w.state.last_fired.insert("k".into(), w.now - Duration::minutes(59));
    assert_eq!(
        outcome_of(&w.eval(&rules, "price"), "k"),
        &Outcome::Suppressed(Reason::Cooldown)
    );
    w.state.last_fired.insert("k".into(), w.now - Duration::minutes(60));
    assert_eq!(fired_ids(&w.eval(&rules, "price")), ["k"]);

    // A human replied 10 minutes ago: quiet for 30.
    let conv = w.conversation.as_mut().unwrap();
    conv.last_outbound_at = Some(w.now - Duration::minutes(10));
    assert_eq!(
        outcome_of(&w.eval(&rules, "price"), "k"),
        &Outcome::Suppressed(Reason::HumanReplied)
    );
    // ... unless that last outbound message was our own automated reply.
    w.state.last_auto_reply_at = Some(w.now - Duration::minutes(10));
    assert_eq!(fired_ids(&w.eval(&rules, "price")), ["k"]);
    w.state.last_auto_reply_at = None;
    w.conversation.as_mut().unwrap().last_outbound_at = Some(w.now - Duration::minutes(31));
    assert_eq!(fired_ids(&w.eval(&rules, "price")), ["k"]);

    w.conversation.as_mut().unwrap().assignee = Some("u1".into());
    assert_eq!(
        outcome_of(&w.eval(&rules, "price"), "k"),
        &Outcome::Suppressed(Reason::Assigned)
    );
    let mut lenient = keyword("k", 1, &["price"]);
    lenient.spec.suppress_when_assigned = false;
    assert_eq!(fired_ids(&w.eval(&compile(vec![lenient]), "price")), ["k"]);
    w.conversation.as_mut().unwrap().assignee = None;

    w.fired_today = 10;
    assert_eq!(
        outcome_of(&w.eval(&rules, "price"), "k"),
        &Outcome::Suppressed(Reason::DailyCap)
    );
    // The cap counts this message's own earlier firings too.
    w.fired_today = 9;
    let mut a = keyword("a", 1, &["price"]);
    a.spec.continue_after = true;
    let e = w.eval(&compile(vec![a, keyword("b", 2, &["price"])]), "price");
    assert_eq!(fired_ids(&e), ["a"]);
    assert_eq!(outcome_of(&e, "b"), &Outcome::Suppressed(Reason::DailyCap));
}

#[test]
fn a_redelivered_message_completes_the_firing_it_already_decided() {
    let mut w = World::new();
    let rules = compile(vec![keyword("k", 1, &["price"])]);
    let firing = Firing {
        tenant_id: "t1".into(),
        rule_id: "k".into(),
        message_id: "m1".into(),
        contact_id: "c1".into(),
        conversation_id: "c1-pn1".into(),
        trigger: "keyword".into(),
        outcome: "fired".into(),
        reason: None,
        actions: vec!["reply".into()],
        reply_message_id: Some("r".into()),
        notify: None,
        waiting_since: None,
        at: w.now,
    };
    w.state.after(&firing);
    w.fired_today = 10;
    // The same message again (stream redelivery): neither its own cooldown nor the cap counts.
    assert_eq!(fired_ids(&w.eval(&rules, "price")), ["k"]);
    // Another message of the contact: cooldown.
    w.state.fired_for.insert("k".into(), "m0".into());
    assert_eq!(
        outcome_of(&w.eval(&rules, "price"), "k"),
        &Outcome::Suppressed(Reason::Cooldown)
    );
}

#[test]
fn a_suppressed_match_still_ends_the_evaluation() {
    let mut w = World::new();
    w.state.last_fired.insert("a".into(), w.now);
    let e = w.eval(
        &compile(vec![keyword("a", 1, &["price"]), keyword("b", 2, &["price"])]),
        "price",
    );
    assert_eq!(outcome_of(&e, "a"), &Outcome::Suppressed(Reason::Cooldown));
    assert_eq!(outcome_of(&e, "b"), &Outcome::Skipped);
}

#[test]
fn welcome_once() {
    let mut w = World::new();
    w.new_contact = true;
    let rules = compile(vec![rule(
        "w",
        json!({"name": "w", "trigger": {"type": "welcome"}, "actions": [text_reply("hi")]}),
    )]);
    assert_eq!(fired_ids(&w.eval(&rules, "hello")), ["w"]);
    w.state.welcomed_at = Some(w.now);
    assert_eq!(
        outcome_of(&w.eval(&rules, "hello"), "w"),
        &Outcome::Suppressed(Reason::AlreadyWelcomed)
    );
}

#[test]
fn replies_follow_the_sending_rules() {
    let mut w = World::new();
    let both = rule(
        "r",
        json!({"name": "r", "trigger": {"type": "keyword", "match": "exact", "keywords": ["hi"]},
               "actions": [{"type": "reply", "message": {"type": "text", "text": {"body": "hello"}},
                            "template": {"name": "promo", "language": {"code": "en"}}}]}),
    );
    let rules = compile(vec![both.clone()]);
    let reply = |e: &Evaluation| e.fired().next().and_then(|(_, p)| p.reply.clone());
    // Inside the window: the free-form message.
    assert_eq!(reply(&w.eval(&rules, "hi")).unwrap().message_type, "text");
    // Outside it: the template, marketing by default — which an opted-out contact never gets.
    w.contact.as_mut().unwrap().last_inbound_at = Some(w.now - Duration::hours(25));
    let r = reply(&w.eval(&rules, "hi")).unwrap();
    assert_eq!((r.message_type.as_str(), r.category), ("template", Category::Marketing));
    w.contact.as_mut().unwrap().consent.marketing = MarketingConsent::OptedOut;
    assert_eq!(
        outcome_of(&w.eval(&rules, "hi"), "r"),
        &Outcome::Suppressed(Reason::OptedOut)
    );
    // A utility template still goes out to them.
    let mut utility = both.clone();
    if let Action::Reply { template_category, .. } = &mut utility.spec.actions[0] {
        *template_category = Some(Category::Utility);
    }
    assert_eq!(
        reply(&w.eval(&compile(vec![utility]), "hi")).unwrap().category,
        Category::Utility
    );
    // Without a template, a closed window stops the reply.
    let text_only = keyword("t", 1, &["hi"]);
    assert_eq!(
        outcome_of(&w.eval(&compile(vec![text_only]), "hi"), "t"),
        &Outcome::Suppressed(Reason::OutsideServiceWindow)
    );
}

#[test]
fn away_hours_across_time_zones_dst_and_holidays() {
    let s: Schedule = serde_json::from_value(json!({
        "time_zone": "America/New_York",
        "hours": {"mon": ["09:00", "17:00"], "fri": ["09:00", "17:00"]},
        "holidays": ["2026-12-25"]
    }))
    .unwrap();
    s.validate().unwrap();
    // Monday 2026-03-02 09:30 EST = 14:30 UTC; Monday 2026-03-09 (after the switch to EDT) 09:30
    // local = 13:30 UTC, when 14:30 UTC is 10:30 local.
    assert!(s.open_at(at("2026-03-02T14:30:00Z")));
    assert!(!s.open_at(at("2026-03-02T13:30:00Z")));
    assert!(s.open_at(at("2026-03-09T13:30:00Z")));
    assert!(!s.open_at(at("2026-03-09T21:30:00Z"))); // 17:30 EDT.
    assert!(!s.open_at(at("2026-03-03T15:00:00Z"))); // Tuesday: closed.
    // Christmas is a Friday: closed all day, local date (10:00 EST = 15:00 UTC).
    assert!(!s.open_at(at("2026-12-25T15:00:00Z")));
    assert!(s.open_at(at("2026-12-18T15:00:00Z")));
    // The local date decides: 2026-12-26 01:00 UTC is still the 25th in New York... and closed
    // anyway by the hours; Friday 2026-12-18 16:59 local is open, 17:00 is not.
    assert!(s.open_at(at("2026-12-18T21:59:00Z")));
    assert!(!s.open_at(at("2026-12-18T22:00:00Z")));
    let tokyo: Schedule =
        serde_json::from_value(json!({"time_zone": "Asia/Tokyo", "hours": {"tue": ["09:00", "18:00"]}})).unwrap();
    // Monday 23:00 UTC is Tuesday 08:00 in Tokyo; an hour later it is open.
    assert!(!tokyo.open_at(at("2026-12-07T23:00:00Z")));
    assert!(tokyo.open_at(at("2026-12-08T00:00:00Z")));
}

#[test]
fn validation_errors_name_the_field() {
    let err = |v: Value| {
        let mut s: RuleSpec = serde_json::from_value(v).unwrap();
        s.validate().unwrap_err().field
    };
    let base = |trigger: Value, actions: Value| json!({"name": "n", "trigger": trigger, "actions": actions});
    let kw = json!({"type": "keyword", "match": "regex", "keywords": ["("]});
    assert_eq!(err(base(kw, json!([text_reply("x")]))), "trigger.keywords");
    let ok = json!({"type": "welcome"});
    assert_eq!(err(base(ok.clone(), json!([]))), "actions");
    assert_eq!(err(base(ok.clone(), json!([{"type": "reply"}]))), "actions[0]");
    assert_eq!(
        err(base(
            ok.clone(),
            json!([{"type": "reply", "message": {"type": "text", "text": {}}}])
        )),
        "actions[0].message"
    );
    assert_eq!(err(base(ok.clone(), json!([{"type": "assign"}]))), "actions[0]");
    assert_eq!(
        err(base(ok.clone(), json!([{"type": "set_status", "status": "snoozed"}]))),
        "actions[0]"
    );
    assert_eq!(
        err(base(ok.clone(), json!([text_reply("a"), text_reply("b")]))),
        "actions"
    );
    let away = json!({"type": "away", "time_zone": "Mars/Olympus", "hours": {"mon": ["09:00", "17:00"]}});
    assert_eq!(err(base(away, json!([text_reply("x")]))), "trigger.time_zone");
    let away = json!({"type": "away", "time_zone": "UTC", "hours": {"mon": ["17:00", "09:00"]}});
    assert_eq!(err(base(away, json!([text_reply("x")]))), "trigger.hours");
    // Unknown fields are refused by the parser.
    assert!(
        serde_json::from_value::<RuleSpec>(json!({"name": "n", "trigger": ok, "actions": [], "colour": 1})).is_err()
    );
}

#[test]
fn merge_patch_edits_and_revalidates() {
    let current = spec(
        json!({"name": "n", "trigger": {"type": "keyword", "match": "exact", "keywords": ["a"]},
                              "conditions": {"tags_any": ["x"]}, "actions": [text_reply("x")]}),
    );
    let next = apply_patch(
        &current,
        &json!({"enabled": false, "conditions": {"tags_any": null}, "priority": 7}),
    )
    .unwrap();
    assert!(!next.enabled);
    assert_eq!(next.priority, 7);
    assert!(next.conditions.tags_any.is_empty());
    assert_eq!(next.trigger, current.trigger);
    assert_eq!(apply_patch(&current, &json!({"name": ""})).unwrap_err().field, "name");
    assert_eq!(apply_patch(&current, &json!({"colour": 1})).unwrap_err().field, "body");
    assert_eq!(apply_patch(&current, &json!([1])).unwrap_err().field, "body");
    let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
    merge_patch(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
    assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
}

#[test]
fn tags_are_normalized_and_reply_ids_derived() {
    let s = spec(
        json!({"name": "n", "trigger": {"type": "welcome"}, "actions": [{"type": "add_tags", "tags": ["  New   Lead "]}]}),
    );
    assert_eq!(
        s.actions[0],
        Action::AddTags {
            tags: vec!["new lead".into()]
        }
    );
    let t = at("2026-12-01T10:00:00Z");
    let a = reply_message_id("t1", "r1", "m1", t);
    assert_eq!(a, reply_message_id("t1", "r1", "m1", t));
    assert_ne!(a, reply_message_id("t2", "r1", "m1", t));
    assert_ne!(a, reply_message_id("t1", "r2", "m1", t));
    assert!(crate::ids::is_valid_id(&a));
}

#[test]
fn text_of_inbound_messages() {
    use super::evaluate::text_of;
    assert_eq!(text_of("text", &json!({"body": "hi"})).as_deref(), Some("hi"));
    assert_eq!(text_of("image", &json!({"caption": "cap"})).as_deref(), Some("cap"));
    assert_eq!(
        text_of("interactive", &json!({"button_reply": {"id": "1", "title": "Yes"}})).as_deref(),
        Some("Yes")
    );
    assert_eq!(
        text_of("button", &json!({"text": "Go", "payload": "p"})).as_deref(),
        Some("Go")
    );
    assert_eq!(text_of("sticker", &json!({})), None);
}

#[test]
fn messages_no_rule_can_trigger_on_need_no_state() {
    use super::evaluate::may_trigger;
    let now = at("2026-12-01T10:00:00Z"); // Tuesday.
    let away = rule(
        "x",
        json!({"name": "x", "trigger": {"type": "away", "time_zone": "UTC", "hours": {"tue": ["09:00", "17:00"]}},
               "actions": [text_reply("closed")]}),
    );
    let rules = compile(vec![keyword("k", 1, &["price"]), away]);
    assert!(!may_trigger(&rules, Some("hello"), now));
    assert!(!may_trigger(&rules, None, now));
    assert!(may_trigger(&rules, Some("PRICE?"), now));
    assert!(may_trigger(&rules, Some("hello"), at("2026-12-01T20:00:00Z")));
    let welcome = compile(vec![rule(
        "w",
        json!({"name": "w", "trigger": {"type": "welcome"}, "actions": [text_reply("hi")]}),
    )]);
    assert!(may_trigger(&welcome, None, now));
    assert!(!may_trigger(&[], Some("price"), now));
}

#[test]
fn an_automated_reply_leaves_the_customer_waiting_for_the_team() {
    use crate::message::{Direction, MessageRecord, MessageStatus};
    let now = at("2026-12-01T10:00:00Z");
    let mut c = conversation(now);
    c.waiting_since = Some(now);
    c.measured_from = Some(now);
    let reply = |rule: Option<&str>| MessageRecord {
        automation_rule: rule.map(str::to_owned),
        ..MessageRecord::new(
            "t1",
            "m2".into(),
            "c1",
            Direction::Outbound,
            "text",
            json!({"body": "auto"}),
            MessageStatus::Queued,
            now + Duration::seconds(1),
            now + Duration::seconds(1),
        )
    };
    let mut automated = c.clone();
    automated.on_outbound(&reply(Some("r1")), false);
    assert_eq!(automated.waiting_since, Some(now));
    assert_eq!(automated.responded_from, None);
    assert_eq!(automated.status, c.status);
    assert_eq!(automated.last_outbound_at, Some(now + Duration::seconds(1)));
    let mut human = c.clone();
    human.on_outbound(&reply(None), false);
    assert_eq!(human.waiting_since, None);
    assert_eq!(human.responded_from, Some(now));
}

fn no_reply(id: &str, minutes: u32) -> Rule {
    rule(
        id,
        json!({"name": id, "trigger": {"type": "no_reply", "minutes": minutes}, "cooldown_minutes": 0,
               "actions": [text_reply("we are on it")]}),
    )
}

/// A customer who wrote at `since` and has had no reply; `now` minutes later.
fn waiting_world(minutes_later: i64) -> World {
    let mut w = World::new();
    let since = w.now;
    let c = w.conversation.as_mut().unwrap();
    c.waiting_since = Some(since);
    c.unanswered_since = Some(since);
    w.now = since + Duration::minutes(minutes_later);
    w
}

#[test]
fn no_reply_rules_never_trigger_on_a_message_and_others_never_on_the_sweep() {
    let w = waiting_world(20);
    let rules = compile(vec![no_reply("n", 15), keyword("k", 1, &["price"])]);
    let on_message = w.eval(&rules, "price");
    assert_eq!(fired_ids(&on_message), ["k"]);
    let alone = w.eval(&compile(vec![no_reply("n", 15)]), "price");
    assert!(matches!(outcome_of(&alone, "n"), Outcome::NotTriggered(_)));
    assert!(!evaluate::may_trigger(
        &compile(vec![no_reply("n", 15)]),
        Some("hi"),
        w.now
    ));
    let swept = w.sweep(&rules);
    assert_eq!(fired_ids(&swept), ["n"], "{swept:?}");
    assert!(matches!(outcome_of(&swept, "k"), Outcome::NotTriggered(_)));
}

#[test]
fn no_reply_fires_from_its_minutes_within_the_catch_up_window() {
    let rules = compile(vec![no_reply("n", 15)]);
    assert!(matches!(
        outcome_of(&waiting_world(14).sweep(&rules), "n"),
        Outcome::NotTriggered(_)
    ));
    assert_eq!(fired_ids(&waiting_world(15).sweep(&rules)), ["n"]);
    assert_eq!(fired_ids(&waiting_world(24).sweep(&rules)), ["n"]);
    let late = 15 + evaluate::NO_REPLY_CATCH_UP_MINUTES;
    assert!(matches!(
        outcome_of(&waiting_world(late).sweep(&rules), "n"),
        Outcome::NotTriggered(_)
    ));
    assert_eq!(
        evaluate::shortest_no_reply(&compile(vec![no_reply("a", 30), no_reply("b", 5)])),
        Some(5)
    );
    assert_eq!(
        evaluate::shortest_no_reply(&compile(vec![keyword("k", 1, &["x"])])),
        None
    );
    let since = at("2026-12-01T10:00:00Z");
    assert!(evaluate::no_reply_due(&rules, since, since + Duration::minutes(16)));
    assert!(!evaluate::no_reply_due(&rules, since, since + Duration::minutes(3)));
}

#[test]
fn no_reply_fires_once_per_waiting_period() {
    let mut w = waiting_world(20);
    let rules = compile(vec![no_reply("n", 15)]);
    let since = w.conversation.as_ref().unwrap().no_reply_waiting_since().unwrap();
    let period = waiting_period_id("c1-pn1", since);
    let firing = Firing {
        tenant_id: "t1".into(),
        rule_id: "n".into(),
        message_id: period.clone(),
        contact_id: "c1".into(),
        conversation_id: "c1-pn1".into(),
        trigger: "no_reply".into(),
        outcome: "fired".into(),
        reason: None,
        actions: vec!["reply".into()],
        reply_message_id: Some("r".into()),
        notify: None,
        waiting_since: Some(since),
        at: w.now,
    };
    w.state.after(&firing);
    // Recorded, actions not known to be done (a sweep crashed): the next one completes it.
    w.now += Duration::minutes(1);
    assert_eq!(fired_ids(&w.sweep(&rules)), ["n"]);
    // Done: later sweeps of the same period pass it over.
    w.state.done_for.insert("n".into(), period);
    assert!(matches!(outcome_of(&w.sweep(&rules), "n"), Outcome::NotTriggered(_)));
}

#[test]
fn any_reply_of_ours_ends_the_waiting_period_and_the_next_message_starts_one() {
    let now = at("2026-12-01T10:00:00Z");
    let inbound = |minute: i64| {
        crate::message::MessageRecord::new(
            "t1",
            format!("in{minute}"),
            "c1",
            crate::message::Direction::Inbound,
            "text",
            json!({"body": "hello"}),
            crate::message::MessageStatus::Received,
            now + Duration::minutes(minute),
            now + Duration::minutes(minute),
        )
    };
    let mut c = Conversation::new("t1", "c1", "pn1", now);
    c.on_inbound(&inbound(0), true);
    c.on_inbound(&inbound(5), true);
    assert_eq!(c.no_reply_waiting_since(), Some(now));
    let mut automated = crate::message::MessageRecord::new(
        "t1",
        "out1".into(),
        "c1",
        crate::message::Direction::Outbound,
        "text",
        json!({"body": "we are on it"}),
        crate::message::MessageStatus::Queued,
        now + Duration::minutes(20),
        now + Duration::minutes(20),
    );
    automated.automation_rule = Some("n".into());
    c.on_outbound(&automated, false);
    // The team's wait goes on; the no-reply wait ended.
    assert_eq!(c.waiting_since, Some(now));
    assert_eq!(c.no_reply_waiting_since(), None);
    c.on_inbound(&inbound(30), true);
    assert_eq!(c.no_reply_waiting_since(), Some(now + Duration::minutes(30)));
    // A conversation stored before the field existed: its wait counts unless our reply came after.
    let mut old = c.clone();
    old.unanswered_since = None;
    assert_eq!(old.no_reply_waiting_since(), None);
    old.last_outbound_at = None;
    assert_eq!(old.no_reply_waiting_since(), Some(now));
}

#[test]
fn no_reply_guardrails_and_blocks_apply() {
    let rules = compile(vec![no_reply("n", 15)]);
    let mut w = waiting_world(20);
    w.conversation.as_mut().unwrap().assignee = Some("u1".into());
    assert_eq!(
        outcome_of(&w.sweep(&rules), "n"),
        &Outcome::Suppressed(Reason::Assigned)
    );
    let mut w = waiting_world(20);
    w.contact.as_mut().unwrap().restricted = true;
    assert_eq!(
        outcome_of(&w.sweep(&rules), "n"),
        &Outcome::Suppressed(Reason::ContactRestricted)
    );
    let mut w = waiting_world(20);
    w.fired_today = 10;
    assert_eq!(
        outcome_of(&w.sweep(&rules), "n"),
        &Outcome::Suppressed(Reason::DailyCap)
    );
    let mut w = waiting_world(20);
    w.contact = None;
    assert_eq!(
        outcome_of(&w.sweep(&rules), "n"),
        &Outcome::Suppressed(Reason::ContactErased)
    );
}

#[test]
fn no_reply_minutes_are_validated() {
    for minutes in [0, MAX_MINUTES + 1] {
        let mut s: RuleSpec =
            serde_json::from_value(json!({"name": "n", "trigger": {"type": "no_reply", "minutes": minutes},
            "actions": [text_reply("x")]}))
            .unwrap();
        assert_eq!(s.validate().unwrap_err().field, "trigger.minutes");
    }
    spec(json!({"name": "n", "trigger": {"type": "no_reply", "minutes": MAX_MINUTES}, "actions": [text_reply("x")]}));
}

#[test]
fn consent_confirmations_are_optional_and_bounded() {
    let mut s = AutomationSettings::default();
    assert_eq!(s.confirmation(crate::whatsapp::ConsentKeyword::OptOut), None);
    s.opt_out_confirmation = Some("You will get no more offers. Reply START to undo.".into());
    s.validate().unwrap();
    assert!(s.confirmation(crate::whatsapp::ConsentKeyword::OptOut).is_some());
    assert_eq!(s.confirmation(crate::whatsapp::ConsentKeyword::OptIn), None);
    s.opt_in_confirmation = Some(" ".into());
    assert_eq!(s.validate().unwrap_err().field, "opt_in_confirmation");
    s.opt_in_confirmation = Some("x".repeat(MAX_CONFIRMATION_CHARS + 1));
    assert!(s.validate().is_err());
    let parsed: AutomationSettings = serde_json::from_value(json!({"daily_cap": 5})).unwrap();
    assert_eq!(parsed.opt_out_confirmation, None);
}

#[test]
fn a_consent_confirmation_is_a_service_text_an_opt_out_never_blocks() {
    let now = at("2026-12-01T10:00:00Z");
    let mut c = contact(now);
    c.consent.marketing = crate::contact::MarketingConsent::OptedOut;
    let reply = evaluate::consent_confirmation(Some(&c), "Unsubscribed.", now).unwrap();
    assert_eq!(
        (reply.message_type.as_str(), reply.category),
        ("text", crate::sending::Category::Service)
    );
    assert_eq!(reply.content, json!({"body": "Unsubscribed."}));
    c.restricted = true;
    assert_eq!(
        evaluate::consent_confirmation(Some(&c), "x", now),
        Err(Reason::ContactRestricted)
    );
    assert_eq!(
        evaluate::consent_confirmation(None, "x", now),
        Err(Reason::ContactErased)
    );
}
