//! README's "What leaves the machine" is generated from the schema compiled
//! into the sensor (`vigil_sensor::viewer::what_leaves_the_machine`): this
//! test fails, showing the difference, when the README's generated part is
//! not exactly that text. `VIGIL_BLESS=1` rewrites it.

#![allow(clippy::unwrap_used)]

const BEGIN: &str = "<!-- BEGIN what-leaves-the-machine: generated from proto/vigil/v1 by `VIGIL_BLESS=1 cargo test -p vigil-sensor --test readme`; edit the proto's comments, not this -->\n";
const END: &str = "<!-- END what-leaves-the-machine -->\n";

/// The lines that differ, `-` README, `+` generated, with line numbers.
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x != y {
            if let Some(x) = x {
                out.push_str(&format!("{:>4} - {x}\n", i + 1));
            }
            if let Some(y) = y {
                out.push_str(&format!("{:>4} + {y}\n", i + 1));
            }
        }
    }
    out
}

#[test]
fn readme_what_leaves_the_machine_is_the_schema() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let generated = vigil_sensor::viewer::what_leaves_the_machine().unwrap();
    let start = readme.find(BEGIN).expect("README has the BEGIN marker") + BEGIN.len();
    let end = start
        + readme[start..]
            .find(END)
            .expect("README has the END marker");
    let current = &readme[start..end];
    if current == generated {
        return;
    }
    if std::env::var("VIGIL_BLESS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{generated}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        eprintln!("README.md's \"What leaves the machine\" rewritten from the schema");
        return;
    }
    panic!(
        "README.md's \"What leaves the machine\" differs from the schema (VIGIL_BLESS=1 rewrites it):\n{}",
        diff(current, &generated)
    );
}

#[test]
fn every_record_kind_and_field_is_named() {
    let text = vigil_sensor::viewer::what_leaves_the_machine().unwrap();
    for kind in vigil_evaluate::RECORD_KINDS {
        assert!(text.contains(&format!("| `{kind}` |")), "{kind}");
    }
    // Comments come from records.proto, nested messages and levels too.
    for want in [
        "| `diagnostics` | `SensorDiagnostics` | optional |",
        "| `process_start` | `ProcessStart` | required |",
        "| `command_line` | string | argv joined with spaces, lossy UTF-8: what rules and analysts read. |",
        "#### `Path`",
        "| `redacted` | map<string, uint64> |",
        "#### `EnrollRequest`",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
}
