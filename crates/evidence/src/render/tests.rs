use super::*;
use crate::report::CheckpointSeen;
use crate::testing::{sample_report, sample_report_of_two_logs};
use crate::{Facts, Period};

/// The sample with the log failing verification, as `integrity::check` reports it.
fn failed_report() -> Report {
    let mut report = sample_report();
    report.integrity.verified = false;
    report.integrity.failure =
        Some("event 57 (seq 57): its leaf hash does not match the tree".into());
    for c in &mut report.controls {
        if c.control == "au-9" {
            c.status = ControlStatus::NotSatisfied;
            c.reason = "the log did not verify".into();
        }
    }
    report
}

/// A period with no events, assembled the way `build_report` assembles one.
fn empty_report() -> Report {
    let mut integrity = sample_report().integrity;
    integrity.events_to_period_end = 20;
    let period = Period::parse("2026-12-03", "2026-12-04").expect("valid period");
    Report::from_parts(period, Facts::default(), integrity)
}

/// A sample whose every name is an attack on one of the two formats.
fn hostile_report() -> Report {
    let mut report = sample_report();
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    report.identities[0].name = evil.into();
    report.identities[0].display_name = Some("a | b | c\n| --- |\n`code` <b>".into());
    report.privileged.items[0].identity = "\"><script>x</script>".into();
    // Ids land in attributes (title) and in shell commands.
    report.holds.items[0].requested.id = "x\" onmouseover=\"alert(3)' ; rm -rf / #".into();
    report.holds.items[0].requested.seq = 999;
    report.holds.items[0].requested.session = Some("s'; echo pwned".into());
    report.refusals_by_rule[0].rule = "</td></tr></table><script>".into();
    report.gateways = vec!["<link rel=stylesheet href=https://evil.example/x.css>".into()];
    report
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// The number of cells in a GFM table line: its unescaped `|`, minus one.
fn md_cells(line: &str) -> usize {
    let mut pipes = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '|' => pipes += 1,
            _ => {}
        }
    }
    pipes - 1
}

/// Each GFM table in `md` (a run of lines starting with `|`) has as many cells in every row
/// as in its header; returns how many tables were checked.
fn assert_tables_keep_their_columns(md: &str) -> usize {
    let mut tables = 0;
    let mut columns: Option<usize> = None;
    for line in md.lines() {
        if line.starts_with('|') {
            let cells = md_cells(line);
            match columns {
                None => {
                    columns = Some(cells);
                    tables += 1;
                }
                Some(expected) => assert_eq!(cells, expected, "row breaks its table: {line}"),
            }
        } else {
            columns = None;
        }
    }
    tables
}

#[test]
fn the_facts_are_in_both_formats() {
    let report = sample_report();
    for out in [html(&report), markdown(&report)] {
        for fact in [
            "billing-agent",
            "alice@https://login.example.com",
            "ap-1",
            "refunds need a finance lead",
            "verified the order",
            "42.5 s",
            "agents never delete",
            "The audit log verified.",
            "checkpoint of size 128",
            "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
            "witness.example/w1",
            "1 h 0 min before the period",
            "2026-12-01T00:00:00.000Z",
            "portcullis sessions replay sess-1",
            "portcullis audit show 0193a0b2-0000-7000-8000-000000000045",
            "portcullis audit proof 0193a0b2-0000-7000-8000-000000000045",
            "3f2a9c",
            "weekly review",
            "report-2026-11-30.html",
        ] {
            assert!(out.contains(fact), "missing {fact:?}");
        }
        // The integrity verdict comes before the control table, which comes before the rest.
        let verdict = out.find("The audit log verified.").unwrap();
        let controls = out.find("Control checks").unwrap();
        let privileged = out.find("Privileged actions allowed").unwrap();
        assert!(verdict < controls && controls < privileged);
        assert!(!out.contains("did NOT verify"));
    }
}

#[test]
fn every_control_result_is_shown_with_its_rule_and_status() {
    let report = sample_report();
    let md = markdown(&report);
    let page = html(&report);
    for c in &report.controls {
        assert!(page.contains(&html::escape(&c.rule)), "{}", c.control);
        assert!(md.contains(&markdown::escape(&c.rule)), "{}", c.control);
        assert!(md.contains(&c.control.to_uppercase()));
    }
    // The sample's AU-6 is not satisfied; the others are.
    assert_eq!(page.matches("NOT SATISFIED").count(), 1);
    assert_eq!(md.matches("**NOT SATISFIED**").count(), 1);
}

#[test]
fn capped_lists_say_how_many_more() {
    let report = sample_report();
    for out in [html(&report), markdown(&report)] {
        // Privileged: 2 counted, 1 kept; the agent's tools: 3 counted, 2 kept.
        assert!(out.contains("And 1 more (2 in all)"), "{out}");
        assert!(out.contains("and 1 more"));
    }
}

#[test]
fn html_escapes_everything_from_the_report() {
    let page = html(&hostile_report());
    assert!(!contains_ci(&page, "<script"), "{page}");
    assert!(!contains_ci(&page, "<img"));
    assert!(!contains_ci(&page, "<link"));
    assert!(!contains_ci(&page, "<b>"));
    assert!(!contains_ci(&page, "</td></tr></table><"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // The hostile id is shown, inside its attribute, not as a new attribute.
    assert!(!page.contains("onmouseover=\"alert"));
    assert!(page.contains("title=\"x&quot; onmouseover=&quot;alert(3)&#39;"));
    // In the pasted commands, a hostile id and session are single shell words.
    assert!(page.contains("portcullis sessions replay &#39;s&#39;\\&#39;&#39;; echo pwned&#39;"));
    // The tables are intact: as many rows opened as closed.
    assert_eq!(page.matches("<tr").count(), page.matches("</tr>").count());
    assert_eq!(
        page.matches("<table>").count(),
        page.matches("</table>").count()
    );
}

#[test]
fn markdown_tables_survive_hostile_values() {
    let md = markdown(&hostile_report());
    assert!(assert_tables_keep_their_columns(&md) > 10);
    assert!(!contains_ci(&md, "<script"), "{md}");
    assert!(!contains_ci(&md, "<img"));
    assert!(!contains_ci(&md, "<link"));
    // The only raw HTML is the writer's own line break.
    let without_breaks = md.replace("<br>", "");
    assert!(!without_breaks.contains('<'), "{md}");
    // A backtick in a value cannot open a code span.
    assert!(md.contains("\\`code\\`"));
}

#[test]
fn the_sample_markdown_tables_are_well_formed() {
    // The sample's own tricky strings (pipes, quotes, newlines) in reasons and statements.
    let md = markdown(&sample_report());
    assert!(assert_tables_keep_their_columns(&md) > 10);
    assert!(!md.replace("<br>", "").contains('<'));
}

#[test]
fn a_failed_verification_leads_the_report() {
    let report = failed_report();
    for out in [html(&report), markdown(&report)] {
        let failure = out
            .find("The audit log did NOT verify: AU-9 is not satisfied.")
            .expect("the failure is stated");
        let reason = out
            .find("its leaf hash does not match the tree")
            .expect("the reason is given");
        // Before any other fact of the report: the checkpoint, the controls, the activity.
        for later in [
            "checkpoint of size 128",
            "Control checks",
            "Activity per identity",
            "billing-agent",
        ] {
            let at = out.find(later).unwrap();
            assert!(
                failure < at && reason < at,
                "{later:?} comes before the failure"
            );
        }
        assert!(!out.contains("The audit log verified."));
        assert!(out.contains("must not be relied on"));
    }
    assert!(html(&report).contains("class=\"callout fail\" role=\"alert\""));
    // In Markdown it is the first section, right under the title.
    let md = markdown(&report);
    let first_section = md.find("\n## ").unwrap();
    assert!(md[first_section..].starts_with(
        "\n## Log integrity (AU-9)\n\n> [!CAUTION]\n> **The audit log did NOT verify: AU-9"
    ));
}

#[test]
fn a_period_without_events_says_so() {
    let report = empty_report();
    assert_eq!(report.totals.events, 0);
    let md = markdown(&report);
    let page = html(&report);
    for out in [&page, &md] {
        for sentence in [
            "No events were recorded in the period",
            "No identity made a request in the period.",
            "No target received a request in the period.",
            "No privileged actions in the period.",
            "No held requests or grant requests in the period.",
            "No break-glass decisions in the period.",
            "No refused approval decisions in the period.",
            "No grants were requested, issued, revoked or expired.",
            "No API key was used for the first time.",
            "No policy version was seen in the period.",
            "The gateway did not start in the period.",
            "No authentication failures in the period.",
            "No request was refused by policy in the period.",
            "Nothing was masked in the period.",
            "No anomalies were flagged in the period.",
            "No review was signed off in the period.",
            "No evidence document was written in the period.",
            "2026-12-03T00:00:00.000Z",
            "The audit log verified.",
        ] {
            assert!(out.contains(sentence), "missing {sentence:?}");
        }
    }
    assert_tables_keep_their_columns(&md);
    assert!(page.ends_with("</html>\n"));
}

#[test]
fn a_log_without_a_covering_checkpoint_or_cosignature_says_so() {
    let mut report = sample_report();
    report.integrity.covering_checkpoint = None;
    report.integrity.cosignatures.clear();
    report.integrity.last_cosignature = None;
    report.integrity.cosignature_age_seconds = None;
    for out in [html(&report), markdown(&report)] {
        assert!(out.contains("No signed checkpoint covers the period"));
        assert!(out.contains("No witness cosignature was seen up to the period"));
        assert!(out.contains("No witness cosignatures were verified."));
    }
    // And an unpublished checkpoint is called that.
    report.integrity.covering_checkpoint = Some(CheckpointSeen {
        size: 7,
        root: "cm9vdA==".into(),
        published: false,
    });
    assert!(markdown(&report).contains("not published"));
}

#[test]
fn rendering_is_deterministic() {
    for report in [
        sample_report(),
        failed_report(),
        empty_report(),
        hostile_report(),
    ] {
        assert_eq!(html(&report), html(&report.clone()));
        assert_eq!(markdown(&report), markdown(&report.clone()));
    }
}

#[test]
fn the_html_is_self_contained() {
    for report in [sample_report(), hostile_report()] {
        let page = html(&report);
        assert!(page.starts_with("<!DOCTYPE html>\n"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(page.contains(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'\">"
        ));
        assert!(page.contains(
            "<title>AU-6 audit review: 2026-12-01T00:00:00.000Z to 2026-12-02T00:00:00.000Z</title>"
        ));
        for forbidden in ["<script", "<link", "@import", "url(", "<iframe", "<object"] {
            assert!(!contains_ci(&page, forbidden), "{forbidden}");
        }
        // Escaped text holds no `<`, so every `<` opens a tag of the writer's own: only
        // these elements, and none with a `src` or `style` attribute.
        const ELEMENTS: &[&str] = &[
            "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "header", "main", "h1",
            "h2", "h3", "p", "div", "table", "thead", "tbody", "tr", "th", "td", "ul", "li",
            "strong", "code", "span", "a", "br",
        ];
        for (at, _) in page.match_indices('<') {
            let tag = &page[at + 1..at + page[at..].find('>').unwrap()];
            let name = tag.trim_start_matches('/').split(' ').next().unwrap();
            assert!(ELEMENTS.contains(&name), "unexpected element <{tag}>");
            assert!(
                !tag.contains(" src=") && !tag.contains(" style="),
                "<{tag}>"
            );
        }
        // Every link is to an anchor in the page, and every anchor it names exists.
        for (at, _) in page.match_indices("href=\"") {
            let target = &page[at + 6..];
            let target = &target[..target.find('"').unwrap()];
            assert!(target.starts_with('#'), "external link {target}");
            assert!(
                page.contains(&format!("id=\"{}\"", &target[1..])),
                "dangling link {target}"
            );
        }
        // Printable: rows do not break across pages, link targets are shown, each page
        // is headed with the period.
        assert!(page.contains("@media print"));
        assert!(page.contains("tr, .callout, h2, h3 { break-inside: avoid"));
        assert!(page.contains("a.ev::after { content: \" (\" attr(href) \")\""));
        assert!(page.contains("@page { @top-center { content: \"AU\\2d 6 audit review"));
    }
}

#[test]
fn every_event_named_is_indexed_once_with_its_session() {
    let report = sample_report();
    let page = html(&report);
    let events = referenced_events(&report);
    for ((_, seq), event) in &events {
        assert_eq!(page.matches(&format!("<tr id=\"ev-{seq}\">")).count(), 1);
        assert!(page.contains(&format!("title=\"{}\"", event.id)));
    }
    // The agent's first event (seq 21) is named by its identity row and its API key's first
    // use, and indexed once.
    assert!(page.matches("href=\"#ev-21\"").count() >= 2);
    // Short form in the text, full id in the tooltip.
    assert!(page.contains(
        "<a class=\"ev\" href=\"#ev-50\" title=\"0193a0b2-0000-7000-8000-000000000050\">\
         0193a0b2…0050</a> <span class=\"seq\">seq 50</span> <span class=\"session\">session \
         <code>sess-1</code></span>"
    ));
    let md = markdown(&report);
    assert!(md.contains("`0193a0b2…0050` (seq 50, session `sess-1`)"));
    // Sessions not recorded say so; an event without a session offers no replay.
    assert!(md.contains("| 52 | `0193a0b2-0000-7000-8000-000000000052` |"));
    let row_52 = md.lines().find(|l| l.starts_with("| 52 |")).unwrap();
    assert!(!row_52.contains("replay"));
}

#[test]
fn identities_seen_for_the_first_time_are_listed() {
    let mut report = sample_report();
    let md = markdown(&report);
    assert!(md.contains("Identities seen for the first time (1):"));
    assert!(md.contains("- billing-agent (agent, portcullis:api-key), first at"));
    for i in &mut report.identities {
        i.new = false;
    }
    assert!(markdown(&report).contains("No identity was seen for the first time"));
}

#[test]
fn short_ids_and_shell_words() {
    assert_eq!(
        short_id("0193a0b2-0000-7000-8000-000000000050"),
        "0193a0b2…0050"
    );
    assert_eq!(short_id("ev-1"), "ev-1");
    assert_eq!(short_id("ééééééééééééééééé"), "éééééééé…éééé");
    assert_eq!(shell_word("0193a0b2-0000-7000"), "0193a0b2-0000-7000");
    assert_eq!(shell_word("a b"), "'a b'");
    assert_eq!(shell_word("it's"), r"'it'\''s'");
    assert_eq!(shell_word(""), "''");
}

#[test]
fn durations_read_as_a_person_would_say_them() {
    assert_eq!(duration(42.5), "42.5 s");
    assert_eq!(duration(0.04), "0 s");
    assert_eq!(duration(192.0), "3 min 12 s");
    assert_eq!(duration(7500.0), "2 h 5 min");
    assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3 d 4 h");
    assert_eq!(duration(f64::NAN), "NaN s");
}

#[test]
fn an_unverified_report_without_a_reason_still_says_it_failed() {
    let mut report = failed_report();
    report.integrity.failure = None;
    assert!(html(&report).contains("Failure: <strong>no reason was recorded</strong>"));
}

/// What a real CommonMark/GFM parser makes of the Markdown: cells per row of each table,
/// the raw HTML it found, the text it shows, the headings, links and images.
struct Parsed {
    tables: Vec<Vec<usize>>,
    html: Vec<String>,
    text: String,
    headings: usize,
    links: usize,
}

fn parse_markdown(md: &str) -> Parsed {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let mut parsed = Parsed {
        tables: Vec::new(),
        html: Vec::new(),
        text: String::new(),
        headings: 0,
        links: 0,
    };
    let mut cells = 0;
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    for event in Parser::new_ext(md, options) {
        match event {
            Event::Start(Tag::Table(_)) => parsed.tables.push(Vec::new()),
            Event::Start(Tag::TableHead | Tag::TableRow) => cells = 0,
            Event::Start(Tag::TableCell) => cells += 1,
            Event::End(TagEnd::TableHead | TagEnd::TableRow) => {
                parsed.tables.last_mut().unwrap().push(cells)
            }
            Event::Start(Tag::Heading { .. }) => parsed.headings += 1,
            Event::Start(Tag::Link { .. } | Tag::Image { .. }) => parsed.links += 1,
            Event::Html(html) | Event::InlineHtml(html) => parsed.html.push(html.to_string()),
            Event::Text(text) | Event::Code(text) => parsed.text.push_str(&text),
            Event::SoftBreak | Event::HardBreak => parsed.text.push('\n'),
            _ => {}
        }
    }
    parsed
}

/// The tables a GFM parser reads are the ones written: as many, with as many columns and
/// rows. A GFM parser pads or drops cells to the header's count, so a value that split a
/// cell shows in the text instead; one that ended a row shows here, as an extra row.
fn assert_tables_read_as_written(report: &Report, parsed: &Parsed) {
    let tables_written: Vec<(usize, usize)> = layout(report)
        .iter()
        .filter_map(|b| match b {
            Block::Table { head, rows } => Some((head.len(), rows.len() + 1)),
            _ => None,
        })
        .collect();
    let tables_read: Vec<(usize, usize)> = parsed
        .tables
        .iter()
        .map(|rows| (rows[0], rows.len()))
        .collect();
    assert_eq!(tables_read, tables_written);
}

#[test]
fn a_markdown_parser_reads_hostile_values_as_text() {
    let report = hostile_report();
    let md = markdown(&report);
    let parsed = parse_markdown(&md);
    assert_tables_read_as_written(&report, &parsed);
    let headings_written = layout(&report)
        .iter()
        .filter(|b| matches!(b, Block::Heading { .. }))
        .count();
    assert_eq!(parsed.headings, 1 + headings_written);
    assert!(parsed.html.iter().all(|h| h == "<br>"), "{:?}", parsed.html);
    assert_eq!(parsed.links, 0);
    // The values are shown exactly as they are.
    for value in [
        "<script>alert(1)</script><img src=x onerror=alert(2)>",
        "\"><script>x</script>",
        "</td></tr></table><script>",
        "<link rel=stylesheet href=https://evil.example/x.css>",
        "a | b | c",
        "`code` <b>",
    ] {
        assert!(parsed.text.contains(value), "{value:?} not shown as text");
    }
}

#[test]
fn a_markdown_parser_reads_the_sample_as_written() {
    for report in [sample_report(), empty_report(), failed_report()] {
        let parsed = parse_markdown(&markdown(&report));
        assert_tables_read_as_written(&report, &parsed);
        assert!(parsed.html.iter().all(|h| h == "<br>"));
        assert_eq!(parsed.links, 0);
    }
    let text = parse_markdown(&markdown(&sample_report())).text;
    assert!(text.contains("<script>alert(1)</script> | \"quoted\" & 'single'"));
    assert!(text.contains("lookup_customer"));
}

#[test]
fn a_report_over_two_logs_shows_each_log_and_events_by_log_and_seq() {
    let report = sample_report_of_two_logs();
    let page = html(&report);
    // Each log's row: its origin (escaped), gateways and counts.
    assert!(page.contains("portcullis/gw-a"), "{page}");
    assert!(page.contains("portcullis/&lt;gw-b&gt;"), "{page}");
    assert!(!page.contains("<gw-b>"));
    assert!(page.contains("covers 2 logs"));
    // Events are indexed by log and seq: every anchor once, every reference to one.
    let anchors: Vec<&str> = page
        .match_indices("<tr id=\"")
        .map(|(at, _)| {
            let rest = &page[at + 8..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    let unique: std::collections::BTreeSet<&&str> = anchors.iter().collect();
    assert_eq!(unique.len(), anchors.len(), "{anchors:?}");
    assert!(anchors.iter().any(|a| a.starts_with("ev-portcullis-gw-a-")));
    assert!(
        anchors
            .iter()
            .any(|a| a.starts_with("ev-portcullis--gw-b--"))
    );
    for anchor in &anchors {
        assert!(page.contains(&format!("href=\"#{anchor}\"")), "{anchor}");
    }
    // The single-log facts list is left out: each log's is in the table.
    assert!(!page.contains("Log origin: not known"));
    let md = markdown(&report);
    assert!(assert_tables_keep_their_columns(&md) > 10);
    assert!(md.contains("in `portcullis/gw-a`"), "{md}");
}
