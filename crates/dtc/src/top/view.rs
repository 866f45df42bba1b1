//! Draws a [`Top`] onto a ratatui frame: a title line, the cluster's throughput over the
//! last minute, the shards (one row per replica; the leader's row carries the queue,
//! running, completed, throughput and latency), the named queues and the workers. Pure drawing: the same
//! function renders to the terminal and, in tests, to ratatui's test backend.

use super::model::{Pane, Top, role};
use dtc_proto::TaskState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Sparkline, Table, TableState};

/// The keys, as the title line lists them.
const KEYS: &str = "q quit · Tab/←→ pane · ↑↓ move · s sort workers";

/// Draws everything.
pub fn render(frame: &mut Frame, top: &Top) {
    let shard_rows: usize = top.shards().iter().map(|s| s.replicas.len()).sum();
    let [title, chart, shards, queues, schedules, workers] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Max(u16::try_from(shard_rows + 3).unwrap_or(u16::MAX)),
        Constraint::Max(u16::try_from(top.queues.len().max(1) + 3).unwrap_or(u16::MAX)),
        Constraint::Max(u16::try_from(top.schedules.len().max(1) + 3).unwrap_or(u16::MAX)),
        Constraint::Min(4),
    ])
    .areas(frame.area());
    frame.render_widget(title_line(top), title);
    let history = top.total_history();
    let peak = history.iter().copied().max().unwrap_or(0);
    frame.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(format!(
                " cluster throughput, last minute (peak {peak} tasks/s) "
            )))
            .data(&history)
            .style(Style::default().fg(Color::Cyan)),
        chart,
    );
    render_shards(frame, top, shards);
    render_queues(frame, top, queues);
    render_schedules(frame, top, schedules);
    render_workers(frame, top, workers);
}

fn render_queues(frame: &mut Frame, top: &Top, area: ratatui::layout::Rect) {
    let rows = top.queues.iter().map(|q| {
        let state = if q.paused {
            Cell::from("paused").style(Style::default().fg(Color::Yellow))
        } else {
            Cell::from("active")
        };
        Row::new(vec![
            Cell::from(q.name.clone()),
            Cell::from(q.queued.to_string()),
            Cell::from(q.running.to_string()),
            Cell::from(q.workers.to_string()),
            Cell::from(format!("{:.1}", q.done_per_s)),
            Cell::from(
                q.rate_per_hour
                    .map_or_else(|| "-".to_owned(), dtc_proto::status::format_rate),
            ),
            state,
        ])
    });
    let columns = [
        ("queue", 24),
        ("queued", 10),
        ("running", 10),
        ("workers", 8),
        ("done/s", 10),
        ("limit", 10),
        ("state", 8),
    ];
    let title = " queues (dtc queue pause|resume|limit NAME) ".to_string();
    render_pane(frame, top, area, rows, &columns, (Pane::Queues, title));
}

fn render_schedules(frame: &mut Frame, top: &Top, area: ratatui::layout::Rect) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let rows = top.schedules.iter().map(|s| {
        let (next, state) = match (s.paused, s.next_ms) {
            (true, _) => (
                "-".to_owned(),
                Cell::from("paused").style(Style::default().fg(Color::Yellow)),
            ),
            (false, Some(at)) => (
                format!("in {:.0}s", at.saturating_sub(now_ms) as f64 / 1000.0),
                Cell::from("active"),
            ),
            (false, None) => ("never".to_owned(), Cell::from("active")),
        };
        Row::new(vec![
            Cell::from(s.spec.name.clone()),
            Cell::from(s.spec.cron.clone()),
            Cell::from(next),
            Cell::from(s.spec.kind.clone()),
            Cell::from(s.fired.to_string()),
            Cell::from(s.skipped.to_string()),
            state,
        ])
    });
    let columns = [
        ("schedule", 24),
        ("cron", 16),
        ("next", 10),
        ("type", 16),
        ("fired", 8),
        ("skipped", 8),
        ("state", 8),
    ];
    let title = " schedules (dtc schedule add|pause|resume|trigger NAME) ".to_string();
    render_pane(frame, top, area, rows, &columns, (Pane::Schedules, title));
}

fn title_line(top: &Top) -> Line<'static> {
    let workers = top.workers().len();
    let mut spans = vec![
        Span::styled("dtc top ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{} · {} shards · {} workers · ",
            top.source,
            top.shards().len(),
            workers
        )),
    ];
    match (&top.disconnected, top.total_rate()) {
        (Some(e), _) => spans.push(Span::styled(
            format!("disconnected ({e}); retrying "),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        (None, Some(rate)) => spans.push(Span::raw(format!("{rate:.0} tasks/s "))),
        (None, None) => spans.push(Span::raw("measuring… ")),
    }
    spans.push(Span::styled(
        format!("· {KEYS}"),
        Style::default().fg(Color::DarkGray),
    ));
    Line::from(spans)
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title)
}

fn micros(us: Option<u64>) -> String {
    us.map_or_else(|| "–".into(), |us| format!("{:.2}ms", us as f64 / 1000.0))
}

/// A minute of values as a line of block characters, scaled to its own peak.
pub fn spark(values: impl ExactSizeIterator<Item = u64> + Clone, width: usize) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let skip = values.len().saturating_sub(width);
    let peak = values.clone().max().unwrap_or(0).max(1);
    values
        .skip(skip)
        .map(|v| BARS[((v * 8).div_ceil(peak)).min(8) as usize])
        .collect()
}

fn render_shards(frame: &mut Frame, top: &Top, area: ratatui::layout::Rect) {
    let dim = top.disconnected.is_some();
    let mut rows = Vec::new();
    for shard in top.shards() {
        let leader = shard.leader();
        let rate = top.rates.get(&shard.shard);
        for (addr, replica) in &shard.replicas {
            let row = match replica {
                Err(e) => Row::new(vec![
                    Cell::from(shard.shard.to_string()),
                    Cell::from(addr.clone()),
                    Cell::from(format!("unreachable: {e}")).style(Style::default().fg(Color::Red)),
                ]),
                Ok(r) => {
                    let leads = leader.is_some_and(|l| l.id == r.id);
                    let mut cells = vec![
                        Cell::from(shard.shard.to_string()),
                        Cell::from(format!("{} #{}", r.addr, r.id)),
                        Cell::from(role(r)).style(if leads {
                            Style::default()
                                .fg(Color::Green)
                                .add_modifier(Modifier::BOLD)
                        } else {
                            Style::default()
                        }),
                        Cell::from(r.term.to_string()),
                        Cell::from(r.committed.to_string()),
                        Cell::from(r.queued.to_string()),
                    ];
                    if leads {
                        cells.extend([
                            Cell::from(r.running.to_string()),
                            Cell::from(r.stats.completed.to_string()),
                            Cell::from(
                                rate.and_then(|x| x.now)
                                    .map_or_else(|| "…".into(), |x| format!("{x:.0}")),
                            ),
                            Cell::from(rate.map_or_else(String::new, |x| {
                                spark(x.history.iter().copied(), 20)
                            }))
                            .style(Style::default().fg(Color::Cyan)),
                            Cell::from(micros(r.stats.p50_us)),
                            Cell::from(micros(r.stats.p95_us)),
                            Cell::from(r.states.get(TaskState::Scheduled).to_string()),
                            Cell::from(r.states.get(TaskState::Retrying).to_string()),
                            Cell::from(r.states.get(TaskState::Failed).to_string()).style(
                                if r.states.get(TaskState::Failed) > 0 {
                                    Style::default().fg(Color::Red)
                                } else {
                                    Style::default()
                                },
                            ),
                        ]);
                    }
                    Row::new(cells)
                }
            };
            rows.push(if dim {
                row.style(Style::default().fg(Color::DarkGray))
            } else {
                row
            });
        }
        if leader.is_none() {
            rows.push(Row::new(vec![
                Cell::from(shard.shard.to_string()),
                Cell::from("NO LEADER").style(Style::default().fg(Color::Red)),
            ]));
        }
    }
    let columns = [
        ("shard", 5),
        ("replica", 24),
        ("role", 9),
        ("term", 5),
        ("commit", 9),
        ("queue", 7),
        ("running", 7),
        ("completed", 10),
        ("tasks/s", 8),
        ("last minute", 20),
        ("p50", 8),
        ("p95", 8),
        ("sched", 7),
        ("retry", 7),
        ("failed", 7),
    ];
    let pane = (Pane::Shards, " shards ".to_string());
    render_pane(frame, top, area, rows, &columns, pane);
}

/// Draws one pane's table: its rows under a bold header of `columns` (name, width), framed
/// with `title` and highlighting the selected row when `pane` has the focus.
fn render_pane<'a>(
    frame: &mut Frame,
    top: &Top,
    area: ratatui::layout::Rect,
    rows: impl IntoIterator<Item = Row<'a>>,
    columns: &[(&'a str, u16)],
    (pane, title): (Pane, String),
) {
    let header = Row::new(columns.iter().map(|(name, _)| *name))
        .style(Style::default().add_modifier(Modifier::BOLD));
    let widths = columns.iter().map(|(_, w)| Constraint::Length(*w));
    let focused = top.pane == pane;
    let table = Table::new(rows, widths)
        .header(header)
        .block(pane_block(title, focused))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let selected = top.selected[pane as usize];
    let mut state = TableState::default().with_selected(focused.then_some(selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn render_workers(frame: &mut Frame, top: &Top, area: ratatui::layout::Rect) {
    let rows = top.workers().into_iter().map(|r| {
        let w = r.worker;
        let age = Style::default().fg(if w.heartbeat_age_ms > 500 {
            Color::Red
        } else {
            Color::Reset
        });
        let slots = match w.ahead() {
            0 => format!("{}/{}", w.running(), w.slots),
            ahead => format!("{}/{} +{ahead}", w.running(), w.slots),
        };
        Row::new(vec![
            Cell::from(r.shard.to_string()),
            Cell::from(w.name),
            Cell::from(w.addr),
            Cell::from(slots),
            Cell::from(w.done.to_string()),
            Cell::from(format!("{} ms", w.heartbeat_age_ms)).style(age),
        ])
    });
    let columns = [
        ("shard", 5),
        ("worker", 24),
        ("address", 21),
        ("slots busy", 13),
        ("done", 10),
        ("heartbeat", 10),
    ];
    let title = format!(" workers (sorted by {}; s to change) ", top.sort.label());
    render_pane(frame, top, area, rows, &columns, (Pane::Workers, title));
}
