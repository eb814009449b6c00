//! The command-line front end: `lianxin client [OPTIONS] COMMAND`.
//!
//! Every command connects, authenticates when given a token (`--token`) or credentials
//! (`--login`/`--password`), does its one thing and prints one JSON document per result on stdout
//! (the proto3 JSON mapping, one line each, ready for `jq`). `sign-in` prints the bare token so
//! that scripts can capture it: `TOKEN=$(lianxin client --login a --password b sign-in)`. Errors
//! go to stderr through the caller, with a non-zero exit.

// Writing results to stdout is the whole point of this module (scripts pipe it to jq); the rest
// of the crate never prints.
#![allow(clippy::print_stdout)]

use std::{
    io::Write,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lianxin_protocol::{
    Wire,
    codec::encode_json,
    v1::{
        Category, Channel, EscalatePetition, EscalationTarget, ListPetitions, PetitionPage,
        PetitionState, RatingLevel, SubmitPetition, TransferPetition,
    },
};
use serde::Serialize;

use crate::{Client, ClientError, ConnectOptions};

/// Options common to every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The server's WebSocket URL.
    #[arg(long, env = "LIANXIN_URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// A session token (from `sign-in`) to authenticate with.
    #[arg(long, env = "LIANXIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Sign in with this login first (with --password).
    #[arg(long, env = "LIANXIN_LOGIN")]
    pub login: Option<String>,
    /// The password for --login.
    #[arg(long, env = "LIANXIN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Send text frames with proto3 JSON instead of binary protobuf.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub timeout: u64,
}

/// What a client command does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// Sign in with --login/--password and print the session token.
    SignIn {
        /// Print the whole signed-in reply as JSON instead of the bare token.
        #[arg(long)]
        full: bool,
    },
    /// Show the account's grid, its jurisdiction and its workers.
    Grid,
    /// Find the grid whose jurisdiction holds an address (no sign-in needed).
    Lookup {
        /// The address, as published in the jurisdiction.
        address: String,
    },
    /// Register a resident account at an address and print the signed-in reply.
    Register {
        /// The new account's login.
        #[arg(long)]
        login: String,
        /// The new account's password.
        #[arg(long)]
        password: String,
        /// The name shown to workers.
        #[arg(long)]
        name: String,
        /// The resident's address (must be in a grid's jurisdiction).
        #[arg(long)]
        address: String,
    },
    /// List the petitions this account takes part in, newest first.
    List {
        /// Only petitions in this state (repeatable).
        #[arg(long = "state", value_enum, value_name = "STATE")]
        states: Vec<StateArg>,
        /// At most this many per page.
        #[arg(long)]
        limit: Option<u32>,
        /// Only petitions with a smaller id (page token).
        #[arg(long, value_name = "PETITION_ID")]
        before: Option<u64>,
        /// Page through all of them and print them as one page.
        #[arg(long, conflicts_with = "before")]
        all: bool,
    },
    /// Show a petition, its read marks and its whole timeline.
    Show {
        /// The petition.
        petition_id: u64,
    },
    /// Raise a petition.
    Submit {
        /// What kind of matter it is.
        #[arg(long, value_enum)]
        category: CategoryArg,
        /// A short title.
        #[arg(long)]
        title: String,
        /// The worker to @ (default: the grid's on-duty worker).
        #[arg(long, value_name = "WORKER_ID")]
        worker: Option<u64>,
        /// The submission's id, so that a resend returns the same petition (default: generated).
        #[arg(long, value_name = "ID")]
        client_msg_id: Option<String>,
        /// Staff: file it for this resident (who came in person or telephoned).
        #[arg(long, value_name = "RESIDENT_ID")]
        on_behalf_of: Option<u64>,
        /// Staff filing for a resident: how the resident came.
        #[arg(
            long,
            value_enum,
            default_value = "in-person",
            requires = "on_behalf_of"
        )]
        channel: ChannelArg,
        /// The first message.
        text: String,
    },
    /// Post a message to a petition's conversation.
    Send {
        /// The petition.
        petition_id: u64,
        /// The message.
        text: String,
        /// The message's id, so that a resend is not stored twice (default: generated).
        #[arg(long, value_name = "ID")]
        client_msg_id: Option<String>,
    },
    /// Mark a petition read up to a sequence number.
    Read {
        /// The petition.
        petition_id: u64,
        /// The last sequence number read.
        seq: u64,
    },
    /// Hand a petition to another worker or another grid.
    #[command(group(clap::ArgGroup::new("to").required(true).args(["to_worker", "to_grid"])))]
    Transfer {
        /// The petition.
        petition_id: u64,
        /// The worker to hand it to.
        #[arg(long, value_name = "WORKER_ID")]
        to_worker: Option<u64>,
        /// The grid whose on-duty worker gets it.
        #[arg(long, value_name = "GRID_ID")]
        to_grid: Option<u64>,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Pass a petition to the community or a co-building unit.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["community", "unit"])))]
    Escalate {
        /// The petition.
        petition_id: u64,
        /// To the community.
        #[arg(long)]
        community: bool,
        /// To the co-building unit of this name.
        #[arg(long, value_name = "NAME")]
        unit: Option<String>,
        /// A note for whoever takes it.
        #[arg(long)]
        note: String,
    },
    /// Report the handling result of a petition.
    Resolve {
        /// The petition.
        petition_id: u64,
        /// The handling summary.
        summary: String,
    },
    /// Close a resolved petition.
    Close {
        /// The petition.
        petition_id: u64,
    },
    /// Withdraw your own petition.
    Withdraw {
        /// The petition.
        petition_id: u64,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Rate a resolved petition (the resident), which closes it.
    Rate {
        /// The petition.
        petition_id: u64,
        /// How satisfied.
        #[arg(value_enum)]
        level: RatingArg,
        /// An optional comment.
        #[arg(long, default_value = "")]
        comment: String,
        /// Staff: record the rating the resident gave by telephone.
        #[arg(long)]
        by_phone: bool,
    },
    /// Reopen a closed petition (the resident): a new handling round.
    Reopen {
        /// The petition.
        petition_id: u64,
        /// Why the matter is not settled.
        #[arg(long)]
        reason: String,
    },
    /// Record a manual points entry for a worker (supervisors), e.g. volunteer service.
    Points {
        /// The worker.
        worker_id: u64,
        /// Points, e.g. 1.5 or -2 (two decimals).
        #[arg(allow_negative_numbers = true)]
        points: f64,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Print the appraisal report of a month as CSV (UTF-8 with BOM) or JSON.
    Report(ReportArgs),
    /// A worker's open petitions, most urgent first.
    Inbox,
    /// Go on or off duty.
    Duty {
        /// on or off.
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Subscribe to the account's feed and print each event as one line of JSON.
    Follow {
        /// Only events after this cursor (0 for the whole feed).
        #[arg(long, default_value_t = 0, value_name = "CURSOR")]
        after: u64,
        /// Stop after this many events (default: until interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// End this session (or, with --everywhere, every session of the account).
    SignOut {
        /// End every session of the account, on every device.
        #[arg(long)]
        everywhere: bool,
    },
    /// Check the connection (prints the server's time).
    Ping,
}

/// What `report` prints.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The month, e.g. 2026-11.
    #[arg(long)]
    pub period: String,
    /// The community (default: the supervisor's own; 0 for the township).
    #[arg(long, default_value_t = 0)]
    pub community: u64,
    /// csv or json.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ReportFormat,
    /// For CSV: the workers (default) or the communities' averages.
    #[arg(long)]
    pub communities: bool,
}

/// The output form of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Spreadsheet-ready CSV, UTF-8 with a byte-order mark.
    Csv,
    /// One line of proto3 JSON.
    Json,
}

/// How a resident came to staff who file a petition for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChannelArg {
    /// At the office.
    InPerson,
    /// By telephone.
    Phone,
}

impl From<ChannelArg> for Channel {
    fn from(c: ChannelArg) -> Self {
        match c {
            ChannelArg::InPerson => Channel::InPerson,
            ChannelArg::Phone => Channel::Phone,
        }
    }
}

/// A rating as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RatingArg {
    /// 满意
    Satisfied,
    /// 基本满意
    BasicallySatisfied,
    /// 不满意
    Dissatisfied,
}

impl From<RatingArg> for RatingLevel {
    fn from(r: RatingArg) -> Self {
        match r {
            RatingArg::Satisfied => RatingLevel::Satisfied,
            RatingArg::BasicallySatisfied => RatingLevel::BasicallySatisfied,
            RatingArg::Dissatisfied => RatingLevel::Dissatisfied,
        }
    }
}

/// A petition category as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CategoryArg {
    /// 政策咨询.
    PolicyQuestion,
    /// 情况反映.
    SituationReport,
    /// 求助.
    RequestForHelp,
    /// 投诉.
    Complaint,
    /// 建议.
    Suggestion,
}

impl From<CategoryArg> for Category {
    fn from(arg: CategoryArg) -> Self {
        match arg {
            CategoryArg::PolicyQuestion => Category::PolicyQuestion,
            CategoryArg::SituationReport => Category::SituationReport,
            CategoryArg::RequestForHelp => Category::RequestForHelp,
            CategoryArg::Complaint => Category::Complaint,
            CategoryArg::Suggestion => Category::Suggestion,
        }
    }
}

/// A petition state as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateArg {
    /// Waiting for the first reply.
    Submitted,
    /// Being handled.
    Responded,
    /// Waiting for the new assignee.
    Transferred,
    /// With the community or a co-building unit.
    Escalated,
    /// Waiting for the resident.
    Resolved,
    /// Finished.
    Closed,
    /// Withdrawn by the resident.
    Withdrawn,
}

impl From<StateArg> for PetitionState {
    fn from(arg: StateArg) -> Self {
        match arg {
            StateArg::Submitted => PetitionState::Submitted,
            StateArg::Responded => PetitionState::Responded,
            StateArg::Transferred => PetitionState::Transferred,
            StateArg::Escalated => PetitionState::Escalated,
            StateArg::Resolved => PetitionState::Resolved,
            StateArg::Closed => PetitionState::Closed,
            StateArg::Withdrawn => PetitionState::Withdrawn,
        }
    }
}

/// On or off duty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// On duty.
    On,
    /// Off duty.
    Off,
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The connection or a request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The options do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// Building a JSON document failed.
    #[error("cannot build JSON output: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs one client command, printing its results on stdout.
pub async fn run(args: ClientArgs, cmd: ClientCommand) -> Result<(), CliError> {
    run_with_output(args, cmd, &mut std::io::stdout()).await
}

/// Runs one client command, writing its results to `out`.
pub async fn run_with_output<W: Write + Send>(
    args: ClientArgs,
    cmd: ClientCommand,
    out: &mut W,
) -> Result<(), CliError> {
    let options = ConnectOptions {
        wire: if args.json { Wire::Json } else { Wire::Binary },
        request_timeout: Duration::from_secs(args.timeout.max(1)),
        ..ConnectOptions::default()
    };
    let mut client = Client::connect(&args.url, options).await?;
    let result = execute(&mut client, &args, cmd, out).await;
    client.close().await;
    match result {
        // The reader of our output went away (`| head`): that is how pipelines end.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes one line.
fn emit(out: &mut impl Write, line: &str) -> Result<(), CliError> {
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Writes a message as one line of proto3 JSON.
fn emit_json<M: Serialize>(out: &mut impl Write, message: &M) -> Result<(), CliError> {
    emit(out, &encode_json(message))
}

/// A client message id unlikely to repeat: process id and the time in nanoseconds.
fn generated_msg_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("cli-{}-{nanos}", std::process::id())
}

fn credentials(args: &ClientArgs) -> Result<Option<(&str, &str)>, CliError> {
    match (&args.login, &args.password) {
        (Some(login), Some(password)) => Ok(Some((login, password))),
        (None, None) => Ok(None),
        _ => Err(CliError::Usage(
            "--login and --password go together".to_owned(),
        )),
    }
}

/// Authenticates with the token, or signs in with the credentials, when given.
async fn sign_in_first(client: &Client, args: &ClientArgs) -> Result<(), CliError> {
    if let Some(token) = &args.token {
        client.authenticate(token.as_str()).await?;
    } else if let Some((login, password)) = credentials(args)? {
        client.sign_in(login, password).await?;
    }
    Ok(())
}

async fn execute<W: Write + Send>(
    client: &mut Client,
    args: &ClientArgs,
    cmd: ClientCommand,
    out: &mut W,
) -> Result<(), CliError> {
    match cmd {
        ClientCommand::SignIn { full } => {
            let (login, password) = credentials(args)?.ok_or_else(|| {
                CliError::Usage("sign-in needs --login and --password".to_owned())
            })?;
            let signed_in = client.sign_in(login, password).await?;
            if full {
                return emit_json(out, &signed_in);
            }
            return emit(out, &signed_in.token);
        }
        ClientCommand::Register {
            login,
            password,
            name,
            address,
        } => {
            let signed_in = client.register(login, password, name, address).await?;
            return emit_json(out, &signed_in);
        }
        _ => sign_in_first(client, args).await?,
    }
    match cmd {
        ClientCommand::SignIn { .. } | ClientCommand::Register { .. } => Ok(()),
        ClientCommand::Grid => emit_json(out, &client.my_grid().await?),
        ClientCommand::Lookup { address } => emit_json(out, &client.lookup_address(address).await?),
        ClientCommand::List {
            states,
            limit,
            before,
            all,
        } => {
            let request = ListPetitions {
                states: states
                    .into_iter()
                    .map(|s| PetitionState::from(s) as i32)
                    .collect(),
                before_id: before.unwrap_or(0),
                limit: limit.unwrap_or(0),
            };
            let page = if all {
                list_all(client, request).await?
            } else {
                client.list_petitions(request).await?
            };
            emit_json(out, &page)
        }
        ClientCommand::Show { petition_id } => {
            let detail = client.get_petition(petition_id).await?;
            let mut entries = Vec::new();
            let mut after_seq = 0;
            loop {
                let page = client.get_history(petition_id, after_seq, 200).await?;
                entries.extend(page.entries);
                // Stop at the end, and on a page token that does not advance.
                if page.next_after_seq <= after_seq {
                    break;
                }
                after_seq = page.next_after_seq;
            }
            let document = serde_json::json!({
                "detail": serde_json::to_value(&detail)?,
                "entries": serde_json::to_value(&entries)?,
            });
            emit(out, &document.to_string())
        }
        ClientCommand::Submit {
            category,
            title,
            worker,
            client_msg_id,
            on_behalf_of,
            channel,
            text,
        } => {
            let submit = SubmitPetition {
                category: Category::from(category) as i32,
                title,
                text,
                worker_id: worker.unwrap_or(0),
                client_msg_id: client_msg_id.unwrap_or_else(generated_msg_id),
                on_behalf_of: on_behalf_of.unwrap_or(0),
                channel: if on_behalf_of.is_some() {
                    Channel::from(channel) as i32
                } else {
                    0
                },
            };
            emit_json(out, &client.submit_petition(submit).await?)
        }
        ClientCommand::Send {
            petition_id,
            text,
            client_msg_id,
        } => {
            let id = client_msg_id.unwrap_or_else(generated_msg_id);
            emit_json(out, &client.send_message(petition_id, text, id).await?)
        }
        ClientCommand::Read { petition_id, seq } => {
            client.mark_read(petition_id, seq).await?;
            emit(out, "{}")
        }
        ClientCommand::Transfer {
            petition_id,
            to_worker,
            to_grid,
            reason,
        } => {
            let transfer = TransferPetition {
                petition_id,
                to_worker_id: to_worker.unwrap_or(0),
                to_grid_id: to_grid.unwrap_or(0),
                reason,
            };
            emit_json(out, &client.transfer(transfer).await?)
        }
        ClientCommand::Escalate {
            petition_id,
            community,
            unit,
            note,
        } => {
            let escalate = match (community, unit) {
                (true, None) => EscalatePetition {
                    petition_id,
                    target: EscalationTarget::Community as i32,
                    unit_name: String::new(),
                    note,
                },
                (false, Some(unit_name)) => EscalatePetition {
                    petition_id,
                    target: EscalationTarget::CoBuildingUnit as i32,
                    unit_name,
                    note,
                },
                _ => {
                    return Err(CliError::Usage(
                        "escalate needs exactly one of --community and --unit".to_owned(),
                    ));
                }
            };
            emit_json(out, &client.escalate(escalate).await?)
        }
        ClientCommand::Resolve {
            petition_id,
            summary,
        } => emit_json(out, &client.resolve(petition_id, summary).await?),
        ClientCommand::Close { petition_id } => {
            emit_json(out, &client.close_petition(petition_id).await?)
        }
        ClientCommand::Withdraw {
            petition_id,
            reason,
        } => emit_json(out, &client.withdraw(petition_id, reason).await?),
        ClientCommand::Rate {
            petition_id,
            level,
            comment,
            by_phone,
        } => {
            let p = if by_phone {
                client
                    .record_phone_rating(petition_id, level.into(), comment)
                    .await?
            } else {
                client.rate(petition_id, level.into(), comment).await?
            };
            emit_json(out, &p)
        }
        ClientCommand::Reopen {
            petition_id,
            reason,
        } => emit_json(out, &client.reopen(petition_id, reason).await?),
        ClientCommand::Points {
            worker_id,
            points,
            reason,
        } => {
            client
                .add_points(worker_id, (points * 100.0).round() as i64, reason)
                .await?;
            emit(out, "{}")
        }
        ClientCommand::Report(r) => {
            let report = client.report(r.period, r.community).await?;
            match r.format {
                ReportFormat::Json => emit_json(out, &report),
                ReportFormat::Csv => {
                    let csv = if r.communities {
                        crate::report::communities_csv(&report)
                    } else {
                        crate::report::workers_csv(&report)
                    }
                    .map_err(|e| CliError::Usage(e.to_string()))?;
                    write!(out, "{csv}")?;
                    out.flush()?;
                    Ok(())
                }
            }
        }
        ClientCommand::Inbox => emit_json(out, &client.inbox().await?),
        ClientCommand::Duty { state } => {
            client.set_on_duty(state == OnOff::On).await?;
            emit(out, "{}")
        }
        ClientCommand::Follow { after, count } => follow(client, after, count, out).await,
        ClientCommand::SignOut { everywhere } => {
            if everywhere {
                client.sign_out_everywhere().await?;
            } else {
                client.sign_out().await?;
            }
            emit(out, "{}")
        }
        ClientCommand::Ping => emit_json(out, &client.ping().await?),
    }
}

/// Pages through every petition of a listing and returns them as one page.
async fn list_all(client: &Client, mut request: ListPetitions) -> Result<PetitionPage, CliError> {
    let mut all = PetitionPage::default();
    loop {
        let page = client.list_petitions(request.clone()).await?;
        all.petitions.extend(page.petitions);
        // Stop at the end, and on a page token that does not go back.
        let next = page.next_before_id;
        if next == 0 || (request.before_id != 0 && next >= request.before_id) {
            return Ok(all);
        }
        request.before_id = next;
    }
}

/// Subscribes and prints events until `count` of them, Ctrl-C, or the connection ends.
async fn follow<W: Write + Send>(
    client: &mut Client,
    after: u64,
    count: Option<u64>,
    out: &mut W,
) -> Result<(), CliError> {
    let subscribed = client.subscribe(after).await?;
    tracing::info!(head_cursor = subscribed.head_cursor, "subscribed");
    let mut printed = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
        let event = tokio::select! {
            event = client.next_event() => event,
            _ = &mut interrupted => return Ok(()),
        };
        match event {
            Some(event) => {
                emit_json(out, &event)?;
                printed += 1;
            }
            None => return Err(client.closed_error().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, ValueEnum};

    /// How the server binary mounts the client: options, then a command.
    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        args: ClientArgs,
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(argv: &[&str]) -> Result<TestCli, clap::Error> {
        TestCli::try_parse_from(std::iter::once("lianxin-client").chain(argv.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn global_options_and_defaults() -> Result<(), clap::Error> {
        let cli = parse(&["--json", "--login", "a", "--password", "b", "grid"])?;
        assert!(cli.args.json);
        assert_eq!(cli.args.login.as_deref(), Some("a"));
        assert_eq!(cli.args.password.as_deref(), Some("b"));
        assert!(matches!(cli.cmd, ClientCommand::Grid));
        let cli = parse(&["--url", "ws://10.0.0.1:9/ws", "--token", "t", "inbox"])?;
        assert_eq!(cli.args.url, "ws://10.0.0.1:9/ws");
        assert_eq!(cli.args.token.as_deref(), Some("t"));
        assert!(!cli.args.json);
        Ok(())
    }

    #[test]
    fn submit_parses_category_title_worker_and_text() -> Result<(), clap::Error> {
        let cli = parse(&[
            "submit",
            "--category",
            "request-for-help",
            "--title",
            "Broken lift",
            "--worker",
            "12",
            "The lift in block 3 is broken",
        ])?;
        match cli.cmd {
            ClientCommand::Submit {
                category,
                title,
                worker,
                client_msg_id,
                text,
                ..
            } => {
                assert_eq!(category, CategoryArg::RequestForHelp);
                assert_eq!(title, "Broken lift");
                assert_eq!(worker, Some(12));
                assert_eq!(client_msg_id, None);
                assert_eq!(text, "The lift in block 3 is broken");
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["submit", "--category", "gossip", "--title", "t", "x"]).is_err());
        let filed = parse(&[
            "submit",
            "--category",
            "complaint",
            "--title",
            "t",
            "--on-behalf-of",
            "9",
            "--channel",
            "phone",
            "x",
        ])?;
        assert!(matches!(
            filed.cmd,
            ClientCommand::Submit {
                on_behalf_of: Some(9),
                channel: ChannelArg::Phone,
                ..
            }
        ));
        assert!(
            parse(&[
                "submit",
                "--category",
                "complaint",
                "--title",
                "t",
                "--channel",
                "phone",
                "x"
            ])
            .is_err(),
            "a channel only for petitions filed for a resident"
        );
        let rate = parse(&["rate", "5", "dissatisfied", "--comment", "没修好"])?;
        assert!(matches!(
            rate.cmd,
            ClientCommand::Rate {
                petition_id: 5,
                level: RatingArg::Dissatisfied,
                by_phone: false,
                ..
            }
        ));
        let points = parse(&["points", "7", "-1.5", "--reason", "迟到"])?;
        assert!(
            matches!(points.cmd, ClientCommand::Points { worker_id: 7, points, .. } if points == -1.5)
        );
        Ok(())
    }

    #[test]
    fn every_category_maps_to_its_proto_value() {
        let cases = [
            ("policy-question", Category::PolicyQuestion),
            ("situation-report", Category::SituationReport),
            ("request-for-help", Category::RequestForHelp),
            ("complaint", Category::Complaint),
            ("suggestion", Category::Suggestion),
        ];
        for (name, category) in cases {
            let arg = CategoryArg::from_str(name, false).ok();
            assert_eq!(arg.map(Category::from), Some(category), "{name}");
        }
        assert!(CategoryArg::from_str("CATEGORY_COMPLAINT", false).is_err());
    }

    #[test]
    fn list_takes_repeated_states() -> Result<(), clap::Error> {
        let cli = parse(&[
            "list",
            "--state",
            "submitted",
            "--state",
            "resolved",
            "--all",
        ])?;
        match cli.cmd {
            ClientCommand::List { states, all, .. } => {
                assert_eq!(states, vec![StateArg::Submitted, StateArg::Resolved]);
                assert!(all);
                let mapped: Vec<PetitionState> = states.into_iter().map(Into::into).collect();
                assert_eq!(
                    mapped,
                    vec![PetitionState::Submitted, PetitionState::Resolved]
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(parse(&["list", "--state", "lost"]).is_err());
        Ok(())
    }

    #[test]
    fn transfer_needs_exactly_one_target() -> Result<(), clap::Error> {
        let cli = parse(&["transfer", "5", "--to-grid", "2", "--reason", "wrong grid"])?;
        assert!(matches!(
            cli.cmd,
            ClientCommand::Transfer { petition_id: 5, to_worker: None, to_grid: Some(2), ref reason }
                if reason == "wrong grid"
        ));
        assert!(parse(&["transfer", "5", "--reason", "r"]).is_err());
        assert!(
            parse(&[
                "transfer",
                "5",
                "--to-worker",
                "1",
                "--to-grid",
                "2",
                "--reason",
                "r"
            ])
            .is_err()
        );
        Ok(())
    }

    #[test]
    fn escalate_needs_exactly_one_target() -> Result<(), clap::Error> {
        let cli = parse(&["escalate", "5", "--unit", "Power company", "--note", "n"])?;
        assert!(matches!(
            cli.cmd,
            ClientCommand::Escalate { community: false, unit: Some(ref u), .. } if u == "Power company"
        ));
        assert!(parse(&["escalate", "5", "--community", "--note", "n"]).is_ok());
        assert!(parse(&["escalate", "5", "--note", "n"]).is_err());
        assert!(parse(&["escalate", "5", "--community", "--unit", "x", "--note", "n"]).is_err());
        Ok(())
    }

    #[test]
    fn small_commands_parse() -> Result<(), clap::Error> {
        assert!(matches!(
            parse(&["duty", "on"])?.cmd,
            ClientCommand::Duty { state: OnOff::On }
        ));
        assert!(parse(&["duty", "maybe"]).is_err());
        assert!(matches!(
            parse(&["follow", "--after", "7", "--count", "3"])?.cmd,
            ClientCommand::Follow {
                after: 7,
                count: Some(3)
            }
        ));
        assert!(matches!(
            parse(&["follow"])?.cmd,
            ClientCommand::Follow {
                after: 0,
                count: None
            }
        ));
        assert!(matches!(
            parse(&["read", "4", "9"])?.cmd,
            ClientCommand::Read {
                petition_id: 4,
                seq: 9
            }
        ));
        assert!(matches!(
            parse(&["send", "4", "hello", "--client-msg-id", "m1"])?.cmd,
            ClientCommand::Send { petition_id: 4, ref text, client_msg_id: Some(ref id) }
                if text == "hello" && id == "m1"
        ));
        assert!(matches!(
            parse(&["withdraw", "4"])?.cmd,
            ClientCommand::Withdraw { petition_id: 4, ref reason } if reason.is_empty()
        ));
        assert!(matches!(
            parse(&["sign-in"])?.cmd,
            ClientCommand::SignIn { full: false }
        ));
        assert!(matches!(
            parse(&["sign-out"])?.cmd,
            ClientCommand::SignOut { everywhere: false }
        ));
        assert!(matches!(
            parse(&["show", "8"])?.cmd,
            ClientCommand::Show { petition_id: 8 }
        ));
        assert!(parse(&["show", "eight"]).is_err());
        Ok(())
    }

    #[test]
    fn register_has_its_own_login_and_password() -> Result<(), clap::Error> {
        let cli = parse(&[
            "--login",
            "admin",
            "register",
            "--login",
            "r1",
            "--password",
            "p",
            "--name",
            "Li Lei",
            "--address",
            "1 Main St",
        ])?;
        assert_eq!(cli.args.login.as_deref(), Some("admin"));
        assert!(matches!(
            cli.cmd,
            ClientCommand::Register { ref login, ref name, .. } if login == "r1" && name == "Li Lei"
        ));
        Ok(())
    }

    // ------------------------------------------------------------------ against a scripted server

    use crate::mock;
    use lianxin_protocol::v1::{
        Entry, Event, GridInfo, HistoryPage, Petition, PetitionDetail, SignedIn, Subscribed,
        client_frame::Request, reply,
    };
    use std::sync::{Arc, Mutex};

    fn args(url: &str) -> ClientArgs {
        ClientArgs {
            url: url.to_owned(),
            token: None,
            login: None,
            password: None,
            json: false,
            timeout: 5,
        }
    }

    fn signed_in(token: &str) -> reply::Result {
        reply::Result::SignedIn(SignedIn {
            token: token.to_owned(),
            ..SignedIn::default()
        })
    }

    /// Runs a command against a server that answers with `answer`; returns stdout and the
    /// requests seen.
    async fn run_against(
        args_for: impl FnOnce(&str) -> ClientArgs,
        cmd: ClientCommand,
        mut answer: impl FnMut(&Request) -> reply::Result + Send + 'static,
    ) -> Result<(String, Vec<Request>), Box<dyn std::error::Error>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_server = Arc::clone(&seen);
        let (url, server) = mock::start(move |mut conn| async move {
            conn.serve(|request| {
                let result = answer(&request);
                if let Ok(mut seen) = seen_by_server.lock() {
                    seen.push(request);
                }
                result
            })
            .await;
        })
        .await?;
        let mut out = Vec::new();
        run_with_output(args_for(&url), cmd, &mut out).await?;
        server.await?;
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        Ok((String::from_utf8(out)?, seen))
    }

    #[test]
    fn the_command_future_and_the_client_can_move_between_threads() {
        fn is_send<T: Send>(_: &T) {}
        fn is_send_sync<T: Send + Sync>() {}
        let future = run(args("ws://127.0.0.1:1/ws"), ClientCommand::Ping);
        is_send(&future);
        is_send_sync::<Client>();
    }

    #[tokio::test]
    async fn sign_in_prints_the_bare_token() -> Result<(), Box<dyn std::error::Error>> {
        let with_credentials = |url: &str| ClientArgs {
            login: Some("w1".into()),
            password: Some("pw".into()),
            ..args(url)
        };
        let (out, seen) = run_against(
            with_credentials,
            ClientCommand::SignIn { full: false },
            |_| signed_in("tok-9"),
        )
        .await?;
        assert_eq!(out, "tok-9\n");
        assert!(matches!(
            seen.as_slice(),
            [Request::SignIn(s)] if s.login == "w1" && s.password == "pw"
        ));
        Ok(())
    }

    #[tokio::test]
    async fn a_token_authenticates_before_the_command() -> Result<(), Box<dyn std::error::Error>> {
        let with_token = |url: &str| ClientArgs {
            token: Some("tok-9".into()),
            json: true,
            ..args(url)
        };
        let (out, seen) = run_against(with_token, ClientCommand::Grid, |request| match request {
            Request::Authenticate(_) => signed_in(""),
            _ => reply::Result::Grid(GridInfo::default()),
        })
        .await?;
        assert_eq!(out, "{}\n", "an empty GridInfo in proto3 JSON");
        assert!(matches!(
            seen.as_slice(),
            [Request::Authenticate(a), Request::GetMyGrid(_)] if a.token == "tok-9"
        ));
        Ok(())
    }

    #[tokio::test]
    async fn show_pages_through_the_whole_history() -> Result<(), Box<dyn std::error::Error>> {
        let entry = |seq: u64| Entry {
            petition_id: 5,
            seq,
            ..Entry::default()
        };
        let (out, seen) = run_against(
            args,
            ClientCommand::Show { petition_id: 5 },
            move |request| match request {
                Request::GetPetition(_) => reply::Result::PetitionDetail(PetitionDetail {
                    petition: Some(Petition {
                        id: 5,
                        ..Petition::default()
                    }),
                    read_marks: Vec::new(),
                }),
                Request::GetHistory(h) if h.after_seq == 0 => reply::Result::History(HistoryPage {
                    entries: vec![entry(1), entry(2)],
                    next_after_seq: 2,
                }),
                _ => reply::Result::History(HistoryPage {
                    entries: vec![entry(3)],
                    next_after_seq: 0,
                }),
            },
        )
        .await?;
        let doc: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(doc["detail"]["petition"]["id"], "5");
        let seqs: Vec<&serde_json::Value> = doc["entries"]
            .as_array()
            .map(|a| a.iter().map(|e| &e["seq"]).collect())
            .unwrap_or_default();
        assert_eq!(seqs, ["1", "2", "3"]);
        assert_eq!(seen.len(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn follow_prints_count_events_one_per_line() -> Result<(), Box<dyn std::error::Error>> {
        let (url, server) = mock::start(|mut conn| async move {
            let Some(frame) = conn.recv().await else {
                return;
            };
            assert!(
                matches!(frame.request, Some(Request::Subscribe(ref s)) if s.after_cursor == 4)
            );
            conn.reply(
                frame.id,
                reply::Result::Subscribed(Subscribed { head_cursor: 9 }),
            )
            .await;
            for cursor in 5..=9 {
                conn.event(Event {
                    cursor,
                    ..Event::default()
                })
                .await;
            }
            while conn.recv().await.is_some() {}
        })
        .await?;
        let mut out = Vec::new();
        let cmd = ClientCommand::Follow {
            after: 4,
            count: Some(2),
        };
        run_with_output(args(&url), cmd, &mut out).await?;
        server.await?;
        assert_eq!(
            String::from_utf8(out)?,
            "{\"cursor\":\"5\"}\n{\"cursor\":\"6\"}\n"
        );
        Ok(())
    }

    #[tokio::test]
    async fn server_errors_fail_the_command() -> Result<(), Box<dyn std::error::Error>> {
        let (url, server) = mock::start(|mut conn| async move {
            conn.serve(|_| {
                reply::Result::Error(lianxin_protocol::v1::Error {
                    code: lianxin_protocol::v1::ErrorCode::NotFound as i32,
                    message: "no such petition".into(),
                })
            })
            .await;
        })
        .await?;
        let mut out = Vec::new();
        let result = run_with_output(
            args(&url),
            ClientCommand::Close { petition_id: 1 },
            &mut out,
        )
        .await;
        server.await?;
        assert!(
            matches!(result, Err(CliError::Client(ClientError::Server { .. }))),
            "{result:?}"
        );
        assert!(out.is_empty());
        Ok(())
    }
}
