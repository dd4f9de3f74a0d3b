//! Masking rows: how each result column is treated ([`ColumnPlan`]), decided from the
//! statement's RowDescription, and each DataRow masked by that plan.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use portcullis_guard::Exchange;
use portcullis_mask::{Profile, Report};

use super::recording::RunRecording;
use super::{Admitted, Session, StatementRun};
use crate::classify::Outputs;
use crate::inference::MaskedColumns;
use crate::wire::{self, Column, Frame};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnPlan {
    Pass,
    /// Text to scan with the detectors (`skip` leading bytes: jsonb's binary version byte).
    Scan {
        skip: usize,
    },
    /// A json or jsonb value scanned as JSON (`Profile::mask_json`): a match in a number
    /// becomes a string, so the result is still JSON (`skip`: as for `Scan`).
    ScanJson {
        skip: usize,
    },
    /// Masked whole.
    Whole,
    /// A json or jsonb column masked whole: the masked text as a JSON string, so the client
    /// still decodes JSON (`skip` leading bytes kept: jsonb's binary version byte).
    Json {
        skip: usize,
    },
    /// An array column masked whole: NULL, the one value every array decoder reads in both
    /// formats (a masked text is not an array; masking each element would have to parse
    /// every element type's format).
    Null,
}

/// json and jsonb.
const JSON: u32 = 114;
const JSONB: u32 = 3802;

/// The array types of the built-in types (`pg_type.typarray` for OIDs below 16384): bool,
/// bytea, char, name, int2, int2vector, int4, regproc, text, tid, xid, cid, oidvector,
/// bpchar, varchar, int8, point, lseg, path, box, float4, float8, polygon, oid, aclitem,
/// macaddr, inet, cidr, timestamp, date, time, timestamptz, interval, numeric, timetz, bit,
/// varbit, uuid, json, jsonb, xml, money, tsvector, tsquery, macaddr8, regclass, regtype.
const ARRAY_TYPES: &[u32] = &[
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015, 1016,
    1017, 1018, 1019, 1020, 1021, 1022, 1027, 1028, 1034, 1040, 1041, 651, 1115, 1182, 1183, 1185,
    1187, 1231, 1270, 1561, 1563, 2951, 199, 3807, 143, 791, 3643, 3645, 775, 2210, 2211,
];

/// How a column the profile names is masked whole so that the client still decodes a value
/// of its type (issue 13 item 14b); `None`: the gateway cannot in this format.
fn whole_plan(type_oid: u32, format: i16) -> Option<ColumnPlan> {
    match (type_oid, format) {
        (JSON, _) | (JSONB, 0) => Some(ColumnPlan::Json { skip: 0 }),
        (JSONB, _) => Some(ColumnPlan::Json { skip: 1 }),
        (oid, _) if ARRAY_TYPES.contains(&oid) => Some(ColumnPlan::Null),
        (_, 0) => Some(ColumnPlan::Whole),
        (oid, _) if text_like(oid) == Some(0) => Some(ColumnPlan::Whole),
        _ => None,
    }
}

/// Types whose binary form is their text (UTF-8), so detectors can read it.
pub(super) fn text_like(oid: u32) -> Option<usize> {
    match oid {
        // text, varchar, bpchar, name, unknown, json, xml, citext-less char
        25 | 1043 | 1042 | 19 | 705 | 114 | 142 | 18 => Some(0),
        // jsonb: a version byte, then text.
        3802 => Some(1),
        _ => None,
    }
}

fn plan_columns(
    columns: &[Column],
    masked: &MaskedColumns<'_>,
    outputs: &Outputs,
) -> Result<Vec<ColumnPlan>, String> {
    // A column the profile names can come back under another name (`AS x`, an expression,
    // a subquery's alias, a whole row turned into JSON). When the statement's output lists
    // reference a named column, or a whole row, every result column that is not plainly a
    // column returned under its own name is masked whole too. So does `*` in a UNION,
    // INTERSECT or EXCEPT: the result's columns take the first branch's names, so `SELECT 0,
    // 'x', 'y' UNION ALL SELECT * FROM customers` returns a masked column under the name `y`.
    let derived = masked.any()
        && (outputs.whole_row
            || outputs.renamed_sources
            || (outputs.set_operation && outputs.output_star)
            || outputs.referenced.iter().any(|name| masked.masks(name)));
    columns
        .iter()
        .map(|c| {
            let named = masked.masks(&c.name) || (derived && !outputs.plain(&c.name));
            match (c.format, named, text_like(c.type_oid)) {
                (_, true, _) if let Some(plan) = whole_plan(c.type_oid, c.format) => Ok(plan),
                (0, false, _) if matches!(c.type_oid, JSON | JSONB) => {
                    Ok(ColumnPlan::ScanJson { skip: 0 })
                }
                (0, false, _) => Ok(ColumnPlan::Scan { skip: 0 }),
                (_, true, _) => Err(format!(
                    "column \"{}\" must be masked (it is, or may carry, a column the masking profile names), but the client asked for it in binary format, which the gateway cannot mask; request text format for it",
                    c.name
                )),
                (_, false, Some(skip)) if matches!(c.type_oid, JSON | JSONB) => {
                    Ok(ColumnPlan::ScanJson { skip })
                }
                (_, false, Some(skip)) => Ok(ColumnPlan::Scan { skip }),
                (_, false, None) => Ok(ColumnPlan::Pass),
            }
        })
        .collect()
}

impl Session {
    pub(super) fn data_row(&mut self, frame: Frame) {
        let Some(run) = self.current_run() else {
            // Rows only answer a Query or an Execute: anything else means the gateway lost
            // track of the conversation, and such a row must not pass unchecked.
            self.lost_track("a row no statement asked for");
            return;
        };
        if run.withheld.is_some() {
            return;
        }
        run.rows_sent += 1;
        let (Some(profile), Some(plan)) = (run.admitted.mask.clone(), run.plan.as_ref()) else {
            if run.admitted.mask.is_some() {
                // A masked statement's rows without a description: never pass them unmasked.
                run.withheld = Some(
                    "the gateway did not see the result's columns, so it cannot mask them".into(),
                );
                return;
            }
            run.record_row(&frame, None);
            frame.write_to(&mut self.to_client);
            return;
        };
        if plan.iter().all(|p| *p == ColumnPlan::Pass) {
            run.record_row(&frame, None);
            frame.write_to(&mut self.to_client);
            return;
        }
        let plan = plan.clone();
        let Ok(mut values) = wire::parse_data_row(&frame) else {
            run.withheld = Some("the server sent a malformed row".into());
            return;
        };
        let mut changed = false;
        for (i, value) in values.iter_mut().enumerate() {
            let Some(bytes) = value.as_ref() else {
                continue;
            };
            let path = run.column_path(i);
            let masked = match plan.get(i).copied().unwrap_or(ColumnPlan::Whole) {
                ColumnPlan::Pass => None,
                ColumnPlan::ScanJson { skip } => {
                    let body = bytes.get(skip..).unwrap_or_default();
                    match serde_json::from_slice::<serde_json::Value>(body) {
                        Ok(mut json) => {
                            let before = run.report.total();
                            profile.mask_json(&mut json, &path, &mut run.report);
                            (run.report.total() != before).then(|| {
                                let mut out =
                                    String::from_utf8_lossy(&bytes[..skip.min(bytes.len())])
                                        .into_owned();
                                out.push_str(&json.to_string());
                                out
                            })
                        }
                        // The server sent something else than JSON: mask it whole, as JSON.
                        Err(_) => Some(json_masked_whole(
                            bytes,
                            skip,
                            &profile,
                            &path,
                            &mut run.report,
                        )),
                    }
                }
                ColumnPlan::Whole => match std::str::from_utf8(bytes) {
                    Ok(text) => Some(profile.mask_whole(text, &path, &mut run.report)),
                    Err(_) => Some(profile.mask_whole("binary", &path, &mut run.report)),
                },
                ColumnPlan::Json { skip } => Some(json_masked_whole(
                    bytes,
                    skip,
                    &profile,
                    &path,
                    &mut run.report,
                )),
                ColumnPlan::Null => {
                    // Reported as masked like any other whole value.
                    profile.mask_whole("array", &path, &mut run.report);
                    *value = None;
                    changed = true;
                    None
                }
                ColumnPlan::Scan { skip } => {
                    let body = bytes.get(skip..).unwrap_or_default();
                    match std::str::from_utf8(body) {
                        Ok(text) => profile.mask_text(text, &path, &mut run.report).map(|m| {
                            let mut out = bytes[..skip].to_vec();
                            out.extend_from_slice(m.as_bytes());
                            String::from_utf8(out).unwrap_or_default()
                        }),
                        // Not text in the client's encoding: do not guess, mask it.
                        Err(_) => Some(profile.mask_whole("binary", &path, &mut run.report)),
                    }
                }
            };
            if let Some(m) = masked {
                *value = Some(Bytes::from(m));
                changed = true;
            }
        }
        if changed {
            run.record_row(&frame, Some(&values));
            wire::data_row(&values, &mut self.to_client);
        } else {
            run.record_row(&frame, None);
            frame.write_to(&mut self.to_client);
        }
    }
}

/// A json or jsonb value masked whole and still valid: its format prefix (jsonb's version
/// byte, `skip` bytes) kept, then the masked text as a JSON string.
fn json_masked_whole(
    bytes: &[u8],
    skip: usize,
    profile: &Profile,
    path: &str,
    report: &mut Report,
) -> String {
    let body = bytes.get(skip..).unwrap_or_default();
    let text = std::str::from_utf8(body).unwrap_or("binary");
    let masked = profile.mask_whole(text, path, report);
    let mut out = String::from_utf8_lossy(&bytes[..skip.min(bytes.len())]).into_owned();
    out.push_str(&serde_json::Value::String(masked).to_string());
    out
}

impl StatementRun {
    /// The run of one statement in `exchange`. `keep_rows`: the target's `record_results`;
    /// `formats`: an Execute's result formats (see [`RunRecording`]).
    pub(super) fn new(
        admitted: Arc<Admitted>,
        exchange: Option<Exchange>,
        keep_rows: bool,
        formats: Option<&[i16]>,
    ) -> StatementRun {
        StatementRun {
            recording: RunRecording::of(exchange.as_ref(), keep_rows, formats),
            admitted,
            exchange: exchange.map(Box::new),
            started: Instant::now(),
            report: Report::default(),
            plan: None,
            columns: Vec::new(),
            withheld: None,
            rows_sent: 0,
        }
    }

    pub(super) fn set_plan(&mut self, columns: &[Column]) {
        let Some(profile) = &self.admitted.mask else {
            return;
        };
        let masked = MaskedColumns {
            profile,
            discovered: &self.admitted.discovered,
        };
        match plan_columns(columns, &masked, &self.admitted.classified.outputs) {
            Ok(plan) => {
                self.columns = columns.iter().map(|c| c.name.clone()).collect();
                self.plan = Some(plan);
            }
            Err(why) => self.withheld = Some(why),
        }
    }

    pub(super) fn column_path(&self, i: usize) -> String {
        match self.columns.get(i) {
            Some(name) => name.clone(),
            None => format!("${i}"),
        }
    }
}
