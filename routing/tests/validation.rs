//! Every refusal of a topology file names the right line, column and reason.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

use hopmq_routing::{Diagnostic, Severity, TopologyError, parse};

const HEADER: &str = r#"[managers.alpha]
address = "127.0.0.1:7401"

[managers.bravo]
address = "127.0.0.1:7402"

[[links]]
between = ["alpha", "bravo"]
"#;
// HEADER is 8 lines; what a test appends starts on line 9.

fn errors(text: &str) -> Vec<Diagnostic> {
    match parse(text, "net.toml") {
        Err(TopologyError::Invalid { errors }) => errors,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

/// Asserts exactly one error, at `line:column`, whose message contains `needle`.
fn refused(text: &str, line: usize, column: usize, needle: &str) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert!(
        e.message.contains(needle),
        "`{}` lacks `{needle}`",
        e.message
    );
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(e.file, "net.toml");
    assert!(
        e.to_string()
            .starts_with(&format!("net.toml:{line}:{column}: error: "))
    );
}

#[test]
fn the_header_alone_is_valid() {
    let checked = parse(HEADER, "net.toml").unwrap();
    assert_eq!(checked.topology.managers().len(), 2);
}

#[test]
fn syntax_error() {
    refused(&format!("{HEADER}[[links]\n"), 9, 9, "unclosed array table");
    refused(
        &format!("{HEADER}[queues.orders]\nhome = charlie\n"),
        10,
        8,
        "",
    );
}

#[test]
fn unknown_keys() {
    refused(
        &format!("{HEADER}[servers.x]\n"),
        9,
        2,
        "unknown field `servers`",
    );
    refused(
        &format!("{HEADER}[managers.charlie]\naddress = \"127.0.0.1:1\"\nport = 3\n"),
        11,
        1,
        "unknown field `port`",
    );
    refused(
        &format!("{HEADER}[[links]]\nbetween = [\"alpha\", \"bravo\"]\nweight = 2\n"),
        11,
        1,
        "unknown field `weight`",
    );
    refused(
        &format!("{HEADER}[queues.q]\nhome = \"alpha\"\nmaxdepth = 2\n"),
        11,
        1,
        "unknown field `maxdepth`",
    );
}

#[test]
fn every_unknown_key_is_reported_at_once() {
    let text = format!(
        "{HEADER}[managers.charlie]\naddress = \"127.0.0.1:1\"\nport = 3\n\
         [[links]]\nbetween = [\"alpha\", \"charlie\"]\nweight = 2\n[servers.x]\n"
    );
    let errors = errors(&text);
    let found: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (11, "unknown field `port`, expected `address`"),
            (
                14,
                "unknown field `weight`, expected one of `between`, `cost`"
            ),
            (
                15,
                "unknown field `servers`, expected one of `managers`, `links`, `queues`"
            ),
        ],
        "{errors:#?}"
    );
}

#[test]
fn missing_address() {
    refused(
        &format!("{HEADER}[managers.charlie]\n"),
        9,
        1,
        "missing field `address`",
    );
}

#[test]
fn link_to_an_undeclared_manager() {
    refused(
        &format!("{HEADER}[[links]]\nbetween = [\"alpha\", \"zulu\"]\n"),
        10,
        21,
        "link to undeclared manager `zulu`",
    );
}

#[test]
fn self_link() {
    refused(
        &format!("{HEADER}[[links]]\nbetween = [\"bravo\", \"bravo\"]\n"),
        10,
        11,
        "link from manager `bravo` to itself",
    );
}

#[test]
fn duplicate_link_in_either_order() {
    refused(
        &format!("{HEADER}\n[[links]]\nbetween = [\"bravo\", \"alpha\"]\ncost = 2\n"),
        11,
        11,
        "duplicate link alpha-bravo; it is already declared on line 8",
    );
}

#[test]
fn link_with_other_than_two_ends() {
    refused(
        &format!("{HEADER}[[links]]\nbetween = [\"alpha\"]\n"),
        10,
        11,
        "exactly two managers; 1 named",
    );
}

#[test]
fn duplicate_manager_name() {
    refused(
        &format!("{HEADER}[managers.alpha]\naddress = \"127.0.0.1:9\"\n"),
        9,
        11,
        "duplicate key `alpha`",
    );
}

#[test]
fn duplicate_queue_name() {
    refused(
        &format!("{HEADER}[queues.q]\nhome = \"alpha\"\n[queues.q]\nhome = \"bravo\"\n"),
        11,
        9,
        "duplicate key `q`",
    );
}

#[test]
fn duplicate_address() {
    refused(
        &format!("{HEADER}[managers.charlie]\naddress = \"127.0.0.1:7401\"\n"),
        10,
        11,
        "already used by manager `alpha`",
    );
}

#[test]
fn queue_homed_on_an_undeclared_manager() {
    refused(
        &format!("{HEADER}[queues.orders]\nhome = \"charlie\"\n"),
        10,
        8,
        "queue `orders` is homed on undeclared manager `charlie`",
    );
}

#[test]
fn invalid_addresses() {
    for (address, needle) in [
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:0", "invalid port"),
        ("127.0.0.1:65536", "invalid port"),
        ("300.0.0.1:80", "invalid host"),
        ("bad host:80", "invalid host"),
        ("", "has no port"),
    ] {
        refused(
            &format!("{HEADER}[managers.charlie]\naddress = \"{address}\"\n"),
            10,
            11,
            needle,
        );
    }
}

#[test]
fn zero_negative_and_huge_costs() {
    for cost in ["0", "-3", "1000001"] {
        refused(
            &format!(
                "{HEADER}[managers.charlie]\naddress = \"127.0.0.1:3\"\n[[links]]\nbetween = [\"charlie\", \"bravo\"]\ncost = {cost}\n"
            ),
            13,
            8,
            &format!("link cost {cost} is out of range"),
        );
    }
    refused(
        &format!("{HEADER}[[links]]\nbetween = [\"alpha\", \"bravo\"]\ncost = 1.5\n"),
        11,
        8,
        "invalid type",
    );
}

#[test]
fn invalid_names() {
    refused(
        &format!("{HEADER}[managers.\"big boss\"]\naddress = \"127.0.0.1:3\"\n"),
        9,
        11,
        "contains ' '",
    );
    refused(
        &format!("{HEADER}[queues.\"\"]\nhome = \"alpha\"\n"),
        9,
        9,
        "cannot be empty",
    );
}

#[test]
fn queue_limits_out_of_range() {
    refused(
        &format!("{HEADER}[queues.q]\nhome = \"alpha\"\nmax_depth = 0\n"),
        11,
        13,
        "max_depth 0 is out of range",
    );
    refused(
        &format!("{HEADER}[queues.q]\nhome = \"alpha\"\nmax_message_bytes = -1\n"),
        11,
        21,
        "max_message_bytes -1 is out of range",
    );
}

#[test]
fn an_empty_file_declares_no_manager() {
    refused("", 1, 1, "at least one manager");
    refused("# nothing\n", 1, 1, "at least one manager");
}

#[test]
fn every_semantic_error_is_reported_in_file_order() {
    let text = format!(
        "{HEADER}[[links]]\nbetween = [\"alpha\", \"zulu\"]\ncost = 0\n[queues.q]\nhome = \"yankee\"\n"
    );
    let errors = errors(&text);
    let at: Vec<_> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, [(10, 21), (11, 8), (13, 8)], "{errors:#?}");
}

#[test]
fn warnings_name_split_networks_and_single_points_of_failure() {
    let text = format!(
        "{HEADER}[managers.charlie]\naddress = \"127.0.0.1:3\"\n[[links]]\nbetween = [\"bravo\", \"charlie\"]\n\
         [managers.delta]\naddress = \"127.0.0.1:4\"\n"
    );
    let warnings = parse(&text, "net.toml").unwrap().warnings;
    let rendered: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "net.toml:13:11: warning: network is split: `delta` cannot reach the other 3 manager(s)",
            "net.toml:4:11: warning: manager `bravo` is a single point of failure: losing it cuts off `charlie`",
            "net.toml:8:11: warning: link alpha-bravo is a single point of failure: losing it splits the network",
            "net.toml:12:11: warning: link bravo-charlie is a single point of failure: losing it splits the network",
        ]
    );
}
