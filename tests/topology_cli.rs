//! `qmgr topology ...` as an operator uses it: output and exit codes on good and bad files.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::fs;

use support::{Run, qmgr};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn assert_code(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

#[test]
fn check_accepts_the_example_networks() {
    for file in [
        "topology.toml",
        "tests/topologies/line.toml",
        "tests/topologies/ring.toml",
        "tests/topologies/mesh-50.toml",
    ] {
        let run = qmgr(&["topology", "check", file]);
        assert_code(&run, 0);
        assert!(
            run.stdout.starts_with(&format!("{file}: ok: ")),
            "{}",
            run.stdout
        );
    }
    let ring = qmgr(&["topology", "check", "tests/topologies/ring.toml"]);
    assert!(
        ring.stdout
            .contains("6 managers, 6 links, 1 queues, 0 warnings"),
        "{}",
        ring.stdout
    );
}

#[test]
fn check_prints_warnings_with_lines_and_still_succeeds() {
    let run = qmgr(&["topology", "check", "tests/topologies/line.toml"]);
    assert_code(&run, 0);
    assert!(run.stdout.contains("3 warnings"), "{}", run.stdout);
    assert!(
        run.stderr.contains(
            "tests/topologies/line.toml:5:11: warning: manager `bravo` is a single point of failure"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("5 | [managers.bravo]"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_refuses_a_bad_file_with_every_error_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "bad.toml",
        "[managers.alpha]\naddress = \"127.0.0.1:1\"\n\n[[links]]\nbetween = [\"alpha\", \"ghost\"]\n\n\
         [queues.orders]\nhome = \"nowhere\"\n",
    );
    let run = qmgr(&["topology", "check", &file]);
    assert_code(&run, 1);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "{file}:5:21: error: link to undeclared manager `ghost`"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "{file}:8:8: error: queue `orders` is homed on undeclared manager `nowhere`"
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("refused: 2 error(s)"), "{}", run.stderr);
}

#[test]
fn check_reports_syntax_errors_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "syntax.toml", "[managers.alpha\n");
    let run = qmgr(&["topology", "check", &file]);
    assert_code(&run, 1);
    assert!(run.stderr.contains(&format!("{file}:1:")), "{}", run.stderr);

    let run = qmgr(&["topology", "check", "/nonexistent/topology.toml"]);
    assert_code(&run, 1);
    assert!(
        run.stderr
            .contains("cannot read topology file /nonexistent/topology.toml"),
        "{}",
        run.stderr
    );
}

#[test]
fn routes_prints_a_table() {
    let run = qmgr(&["topology", "routes", "topology.toml", "--from", "alpha"]);
    assert_code(&run, 0);
    assert_eq!(
        run.stdout,
        "destination  next hop  cost  path\n\
         bravo        bravo     1     alpha -> bravo\n\
         charlie      charlie   2     alpha -> charlie\n\
         delta        bravo     2     alpha -> bravo -> delta\n"
    );
}

#[test]
fn routes_avoid_down_links_and_report_unreachable_destinations() {
    let run = qmgr(&[
        "topology",
        "routes",
        "topology.toml",
        "--from",
        "alpha",
        "--down",
        "bravo-delta",
        "--json",
    ]);
    assert_code(&run, 0);
    let routes: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let delta = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["destination"] == "delta")
        .unwrap();
    assert_eq!(delta["next_hop"], "charlie");
    assert_eq!(delta["cost"], 4);
    assert_eq!(
        delta["path"],
        serde_json::json!(["alpha", "charlie", "delta"])
    );

    let run = qmgr(&[
        "topology",
        "routes",
        "topology.toml",
        "--from",
        "alpha",
        "--down",
        "alpha-bravo",
        "--down",
        "charlie-alpha",
        "--json",
    ]);
    assert_code(&run, 0);
    let routes: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    for route in routes.as_array().unwrap() {
        assert_eq!(route["next_hop"], serde_json::Value::Null, "{route}");
        assert_eq!(route["cost"], serde_json::Value::Null, "{route}");
    }
    assert_eq!(routes.as_array().unwrap().len(), 3);

    let table = qmgr(&[
        "topology",
        "routes",
        "topology.toml",
        "--from",
        "alpha",
        "--down",
        "alpha-bravo",
        "--down",
        "alpha-charlie",
    ]);
    assert!(
        table
            .stdout
            .contains("delta        -         -     unreachable"),
        "{}",
        table.stdout
    );
}

#[test]
fn routes_refuse_unknown_managers_and_links() {
    let run = qmgr(&["topology", "routes", "topology.toml", "--from", "zulu"]);
    assert_code(&run, 1);
    assert!(run.stderr.contains("no manager `zulu`"), "{}", run.stderr);
    let run = qmgr(&[
        "topology",
        "routes",
        "topology.toml",
        "--from",
        "alpha",
        "--down",
        "alpha-delta",
    ]);
    assert_code(&run, 1);
    assert!(
        run.stderr.contains("`alpha-delta` names no declared link"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_usage_exits_2() {
    assert_code(&qmgr(&["topology", "routes", "topology.toml"]), 2);
    assert_code(&qmgr(&["topology", "frobnicate"]), 2);
}

#[test]
fn dot_draws_costs_and_highlights_the_route_tree() {
    let run = qmgr(&[
        "topology",
        "dot",
        "topology.toml",
        "--from",
        "alpha",
        "--down",
        "charlie-delta",
    ]);
    assert_code(&run, 0);
    let dot = run.stdout;
    assert!(dot.starts_with("graph topology {"), "{dot}");
    assert!(
        dot.contains("\"alpha\" [label=\"alpha\\n127.0.0.1:7401\", style=filled"),
        "{dot}"
    );
    assert!(
        dot.contains("\"alpha\" -- \"bravo\" [label=\"1\", color=blue"),
        "{dot}"
    );
    assert!(
        dot.contains("\"bravo\" -- \"delta\" [label=\"1\", color=blue"),
        "{dot}"
    );
    assert!(
        dot.contains("\"alpha\" -- \"charlie\" [label=\"2\", color=blue"),
        "{dot}"
    );
    assert!(
        dot.contains("\"charlie\" -- \"delta\" [label=\"2\", style=dashed"),
        "{dot}"
    );
    assert!(dot.trim_end().ends_with('}'));
}

#[test]
fn diff_lists_changes() {
    let dir = tempfile::tempdir().unwrap();
    let original = fs::read_to_string(support::repo_root().join("topology.toml")).unwrap();
    let edited = original
        .replacen(
            "between = [\"alpha\", \"bravo\"]\ncost = 1",
            "between = [\"alpha\", \"bravo\"]\ncost = 5",
            1,
        )
        .replacen("home = \"delta\"", "home = \"charlie\"", 1);
    assert_ne!(original, edited);
    let new = write(&dir, "new.toml", &edited);
    let run = qmgr(&["topology", "diff", "topology.toml", &new]);
    assert_code(&run, 0);
    assert_eq!(
        run.stdout,
        "~ link alpha-bravo cost 1 -> 5\n~ queue orders home delta -> charlie\n"
    );

    let same = qmgr(&["topology", "diff", "topology.toml", "topology.toml"]);
    assert_eq!(same.stdout, "no changes\n");

    let bad = write(&dir, "bad.toml", "[managers.x]\n");
    let run = qmgr(&["topology", "diff", "topology.toml", &bad]);
    assert_code(&run, 1);
    assert!(
        run.stderr.contains("missing field `address`"),
        "{}",
        run.stderr
    );
}

#[test]
fn generate_makes_a_valid_mesh() {
    let run = qmgr(&[
        "topology",
        "generate",
        "--managers",
        "30",
        "--links",
        "60",
        "--seed",
        "9",
    ]);
    assert_code(&run, 0);
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "mesh.toml", &run.stdout);
    let check = qmgr(&["topology", "check", &file]);
    assert_code(&check, 0);
    assert!(
        check.stdout.contains("30 managers, 60 links"),
        "{}",
        check.stdout
    );
}
