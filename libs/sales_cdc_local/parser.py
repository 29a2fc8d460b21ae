"""The ``sales-cdc`` command line: its commands and their options (defaults from the job's config classes)."""

from __future__ import annotations

import argparse
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from sales_cdc import config as C
from sales_cdc import local_job as LJ
from sales_cdc import schema as S
from sales_cdc.contract import load_contract
from sales_cdc.job import merge_sql
from sales_cdc.settings import job_config
from sales_cdc.sql import Dialect, MergeSql

from .embedded import DEFAULT_DATA_DIR
from .local_aws import KINESIS_STREAM
from .logs import LOG_FORMATS

# the orders table's fixtures travel with the harness: `demo-fixtures` runs from any folder
FIXTURES = Path(__file__).parent / "fixtures"
DEFAULT_FIXTURES = FIXTURES / "cdc"
DEFAULT_EXPECTED = FIXTURES / "expected" / "orders.jsonl"


EMBEDDED_URL_HELP = f"PostgreSQL URL (env {LJ.WAREHOUSE_URL_ENV}); default: an embedded PostgreSQL"


def _add_pg_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pg-data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="data folder of the embedded PostgreSQL (when no --warehouse-url)")


def _add_warehouse_args(parser: argparse.ArgumentParser, embedded: bool = True) -> None:
    LJ.add_warehouse_args(parser, EMBEDDED_URL_HELP)
    if embedded:  # the demos keep theirs in their work folder
        _add_pg_data_dir(parser)


def warehouse_sql(args: argparse.Namespace) -> MergeSql:
    """The warehouse's tables a command's options name (contract, schema, table, delete mode), as the job's."""
    return merge_sql(Dialect.POSTGRES, job_config(LJ.settings(args), load_contract(args.contract).entity))


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default shown, unless its help already speaks of it or it has none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default in (None, [], argparse.SUPPRESS) or not action.option_strings
                or action.nargs == 0):  # a flag: its default is not to be given
            return text
        return f"{text} (default: %(default)s)"


# Help of the options several commands share, given where a command gives none of its own
SHARED_HELP = {
    "--region": "AWS region",
    "--endpoint-url": "AWS endpoint, e.g. a moto server (default: AWS itself)",
    "--job-name": LJ.JOB_NAME_HELP,
    "--count": "operations to generate",
    "--update-share": "share of the operations that update an existing item",
    "--delete-share": "share of the operations that delete one",
    "--seed": "the generator's random seed (the same seed, the same items)",
    "--records-per-file": "stream records per fixture file",
    "--kinesis-stream": "the Kinesis stream the records are put on",
    "--state-file": "the emulator's positions in the table's stream: a restart resumes from them",
    "--silver-format": "silver layer format",
    "--stack": "CloudFormation stack name",
}


def _add_output_args(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The output options, before or after the command (``sales-cdc -v run`` and ``sales-cdc run -v``): the
    command's copy does not overwrite what was given before it."""
    given = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="store_true", **given,
                        help="log every step, Spark's own output and, on a failure, the traceback")
    parser.add_argument("-q", "--quiet", action="store_true", **given,
                        help="no progress line per batch: warnings, errors and the summary only")
    parser.add_argument("--log-format", choices=LOG_FORMATS, **({"default": "text"} if defaults else given),
                        help="text for a terminal, json for a log shipper (one JSON object per line)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sales-cdc", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('sales-cdc')}")
    _add_output_args(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_status, _add_quarantine, _add_history, _add_demos, _add_contract, _add_migrate,
                _add_backfill, _add_tools, _add_aws):
        add(sub)
    for command in _commands(sub):
        command.formatter_class = HelpFormatter
        _add_output_args(command, defaults=False)
        for action in command._actions:
            action.help = action.help or SHARED_HELP.get(next(iter(action.option_strings), ""))
    return parser


def _commands(sub) -> list[argparse.ArgumentParser]:
    """Every command's parser, the nested ones (``contract check``) included."""
    found = []
    for command in dict.fromkeys(sub.choices.values()):
        found.append(command)
        for action in command._actions:  # argparse keeps a command's own subcommands there only
            if isinstance(action, argparse._SubParsersAction):
                found += _commands(action)
    return found


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="run the streaming job (source: a folder of Pipe payload files, or Kinesis)")
    LJ.add_stream_args(run)
    add_job_args(run)


def add_job_args(parser: argparse.ArgumentParser) -> None:
    """``run``'s options beside its source (the job's own, and an embedded PostgreSQL), which a replay of
    quarantined records takes too."""
    LJ.add_job_args(parser, EMBEDDED_URL_HELP, docs_default=".demo/data_docs")
    _add_pg_data_dir(parser)


def _add_demos(sub) -> None:
    demo = sub.add_parser("demo", help="the whole source side on moto: generator -> DynamoDB -> pipe -> Kinesis -> "
                                       "Spark -> PostgreSQL, then warehouse == table, row for row")
    demo.add_argument("--count", type=int, default=2000, help="generated events (default 2000)")
    demo.add_argument("--update-share", type=float, default=0.2)
    demo.add_argument("--delete-share", type=float, default=0.1)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--rate", type=float, default=None, help="events/s written by the generator (default: max)")
    demo.add_argument("--preload", type=int, default=0,
                      help="operations written before the table's stream is enabled (a table older than its stream), "
                           "loaded by a backfill while the job runs and --count more are written (docs/backfill.md)")
    demo.add_argument("--shards", type=int, default=2, help="Kinesis shards")
    demo.add_argument("--history", action="store_true",
                      help="keep the change history too (the contract with history: true; docs/history.md), and "
                           "check its current versions and a version per write")
    demo.add_argument("--work-dir", type=Path, default=Path(".demo"), help="wiped and recreated on every demo")
    LJ.add_contract_arg(demo)
    LJ.add_dq_param_arg(demo)
    _add_warehouse_args(demo, embedded=False)
    fixtures = sub.add_parser("demo-fixtures", help="offline: the checked-in fixtures through the file source, "
                                                    "then compared with their expected state")
    fixtures.add_argument("--fixtures", type=Path, default=None,
                          help=f"folder of Pipe payload files (default, with the default contract: {DEFAULT_FIXTURES})")
    fixtures.add_argument("--expected", type=Path, default=None,
                          help=f"JSON lines of the expected final rows (default, with the default contract: "
                               f"{DEFAULT_EXPECTED})")
    fixtures.add_argument("--work-dir", type=Path, default=Path(".demo"), help="wiped and recreated on every demo")
    LJ.add_contract_arg(fixtures)
    LJ.add_dq_param_arg(fixtures)
    _add_warehouse_args(fixtures, embedded=False)


def _add_contract(sub) -> None:
    contract = sub.add_parser("contract", help="table contracts: check, draft or compare them (docs/contracts.md)")
    contract_commands = contract.add_subparsers(dest="contract_command", required=True)
    check = contract_commands.add_parser("check", help="validate a contract file; print its columns")
    check.add_argument("path", type=Path)
    infer = contract_commands.add_parser("infer", help="draft a contract from a table sample or payload files")
    infer_source = infer.add_mutually_exclusive_group(required=True)
    infer_source.add_argument("--table", help="DynamoDB table to sample (a paginated Scan)")
    infer_source.add_argument("--payloads", type=Path, help="folder of *.jsonl Pipe payload files")
    infer.add_argument("--limit", type=int, default=1000, help="items to sample (default %(default)s)")
    infer.add_argument("--entity", default=None, help="entity name (default: from the table name)")
    infer.add_argument("--endpoint-url", default=None, help="AWS endpoint (e.g. a moto server)")
    infer.add_argument("--region", default=C.REGION)
    infer.add_argument("--output", type=Path, default=None, help="write the draft here (default: print it)")
    diff = contract_commands.add_parser("diff", help="what changes from one contract to another, and the statements "
                                                     "each kind of sink would run (docs/schema-evolution.md)")
    diff.add_argument("old", type=Path, help="the contract the sinks hold now")
    diff.add_argument("new", type=Path, help="the contract to move to")
    diff.add_argument("--db-schema", default=C.WarehouseConfig.db_schema,
                      help="warehouse schema (default: %(default)s)")


def _add_backfill(sub) -> None:
    backfill = sub.add_parser("backfill", help="load a table's existing items (a parallel Scan, or a DynamoDB export) "
                                               "through the running job (docs/backfill.md)")
    LJ.add_contract_arg(backfill)
    source = backfill.add_mutually_exclusive_group(required=True)
    source.add_argument("--scan", action="store_true", help="scan the table (--table, default the contract's)")
    source.add_argument("--export", help="a DynamoDB export (DYNAMODB_JSON): its folder, or s3://bucket/prefix")
    target = backfill.add_mutually_exclusive_group(required=True)
    target.add_argument("--kinesis-stream", help="feed the job's Kinesis stream (e.g. kinesis-for-sales-data)")
    target.add_argument("--to-dir", type=Path, help="feed the folder the job's file source watches (its --source-dir)")
    target.add_argument("--stack", help="run it on AWS: start the stack's Glue backfill job, which feeds the stack's "
                                        "stream (--export then names an export on S3)")
    backfill.add_argument("--table", default=None, help="the DynamoDB table to scan (default: the contract's)")
    backfill.add_argument("--segments", type=int, default=4, help="parallel Scan segments (default %(default)s)")
    backfill.add_argument("--rate", type=float, default=None,
                          help="read capacity units per second for the Scan, all segments together (default: no limit)")
    backfill.add_argument("--page-size", type=int, default=1000, help="items per Scan page (default %(default)s)")
    backfill.add_argument("--checkpoint", type=Path, default=None,
                          help="the Scan's progress file: run again with it to resume (default .backfill/<table>.json)")
    backfill.add_argument("--endpoint-url", default=None, help="AWS endpoint (e.g. a moto server)")
    backfill.add_argument("--region", default=C.KinesisConfig.region)


def _add_migrate(sub) -> None:
    migrate = sub.add_parser("migrate", help="bring the warehouse and the lake to a contract's columns, as the job "
                                             "does at start-up (docs/schema-evolution.md)")
    LJ.add_contract_arg(migrate)
    migrate.add_argument("--dry-run", action="store_true", help="print what each sink would run; change nothing")
    migrate.add_argument("--lake-root", default=None,
                         help="the lake (a folder or s3://bucket/prefix), if the job has one")
    migrate.add_argument("--silver-format", choices=C.FORMATS, default=C.LakeConfig.silver_format)
    migrate.add_argument("--endpoint-url", default=None, help="S3 endpoint of the lake (e.g. a moto server)")
    migrate.add_argument("--region", default=C.KinesisConfig.region)
    migrate.add_argument("--job-name", default=C.JobConfig.job_name)
    _add_warehouse_args(migrate)


def _add_status(sub) -> None:
    status = sub.add_parser("status", help="where a job is: its last committed batch, recent batches (counts, "
                                           "quarantine, data quality) and its lag behind the source; while it runs "
                                           "or after (docs/operations.md)")
    LJ.add_contract_arg(status)
    status.add_argument("--job-name", default=C.JobConfig.job_name)
    status.add_argument("--batches", type=int, default=10, help="recent batches to show")
    status.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="the job's checkpoint: with --source-dir or --kinesis-stream, the lag is shown")
    source = status.add_mutually_exclusive_group()
    source.add_argument("--source-dir", type=Path, help="the folder the job's file source reads")
    source.add_argument("--kinesis-stream", help="the Kinesis stream the job reads")
    status.add_argument("--endpoint-url", default=None)
    status.add_argument("--region", default=C.KinesisConfig.region)
    status.add_argument("--json", action="store_true", help="one JSON document (its schema: docs/operations.md)")
    _add_warehouse_args(status)


def _add_quarantine(sub) -> None:
    quarantine = sub.add_parser("quarantine", help="the records the job set aside: list or show them, or replay them "
                                                   "through the job once a rule or the contract is fixed "
                                                   "(docs/operations.md)")
    commands = quarantine.add_subparsers(dest="quarantine_command", required=True)
    shown = [commands.add_parser("list", help="one line per quarantined record (newest last)"),
             commands.add_parser("show", help="the selected records whole, their payloads included, as JSON")]
    replay = commands.add_parser("replay", help="run the selected records through decode, data quality, the lake and "
                                                "the warehouse again, with the current contract and suites; give it "
                                                "the options `run` has; the same replay twice runs once")
    for command in shown:
        LJ.add_contract_arg(command)
        _add_warehouse_args(command)
    add_job_args(replay)
    replay.add_argument("--replay-dir", type=Path, default=Path(".replays"),
                        help="a folder per replay: the selected payloads and the replay's checkpoint")
    for command in (*shown, replay):
        selection = command.add_argument_group("which records (every filter given must hold)")
        selection.add_argument("--batch", type=int, help="quarantined by this batch")
        selection.add_argument("--stage", choices=S.QUARANTINE_STAGES, help="rejected at this stage")
        selection.add_argument("--rule", help="rejected by this data-quality rule (its name, or part of it)")
        selection.add_argument("--since", type=datetime.fromisoformat, help="quarantined at or after (ISO-8601)")
        selection.add_argument("--key", help="of the item with this key (as the quarantine shows it)")
        selection.add_argument("--limit", type=int, help="at most this many records")


def _add_history(sub) -> None:
    history = sub.add_parser("history", help="the versions of one item, oldest first, from the warehouse's history "
                                             "(a contract with history: true; docs/history.md)")
    LJ.add_contract_arg(history)
    _add_warehouse_args(history)
    history.add_argument("--key", required=True, help="the item's key: its value, or for a partition + sort key a "
                                                      "JSON object, e.g. '{\"pk\": \"a\", \"sk\": 1}'")
    history.add_argument("--as-of", type=datetime.fromisoformat, default=None,
                         help="only the version valid at this time (ISO-8601, UTC)")
    history.add_argument("--json", action="store_true", help="the versions as JSON, every column")


def _add_tools(sub) -> None:
    docs = sub.add_parser("dq-docs", help="print (or open) the location of the data-quality Data Docs site")
    docs.add_argument("--docs-location", default=".demo/data_docs", help="folder or s3://bucket/prefix")
    docs.add_argument("--website-url", default=None,
                      help="the docs bucket's website endpoint (printed instead of the s3:// location)")
    docs.add_argument("--open", action="store_true", help="open the index in a browser (local folders)")
    docs.add_argument("--stack", default=None, help="a deployed stack: print its docs site's URL (with DocsCdn)")
    docs.add_argument("--region", default=None)
    docs.add_argument("--endpoint-url", default=None)
    generate = sub.add_parser("generate", help="Faker items of the contract's table (orders by default): to DynamoDB, "
                                               "or to Pipe-format fixture files")
    LJ.add_contract_arg(generate)
    generate.add_argument("--count", type=int, default=1000)
    generate.add_argument("--update-share", type=float, default=0.2)
    generate.add_argument("--delete-share", type=float, default=0.1)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--rate", type=float, default=None, help="events/s (default: as fast as possible)")
    target = generate.add_mutually_exclusive_group(required=True)
    target.add_argument("--table", nargs="?", const="", help="write to this DynamoDB table (no value: the "
                                                           "contract's table, e.g. OrdersRawTable)")
    target.add_argument("--fixtures-dir", type=Path, help="write Pipe payload JSON-lines files here instead")
    generate.add_argument("--records-per-file", type=int, default=1000)
    generate.add_argument("--endpoint-url", default=None, help="AWS endpoint, e.g. a moto server")
    generate.add_argument("--region", default=C.REGION)
    maintain = sub.add_parser("lake-maintain", help="compact small files and vacuum old ones in the Delta lake")
    maintain.add_argument("--lake-root", required=True, help="folder or s3://bucket/prefix")
    LJ.add_contract_arg(maintain)
    maintain.add_argument("--retention-hours", type=int, default=168,
                          help="keep files a reader of a version this recent may need (default 7 days)")
    maintain.add_argument("--no-vacuum", action="store_true", help="compact only")
    maintain.add_argument("--silver-format", choices=["delta", "parquet"], default="delta",
                          help="parquet: prune old silver snapshots instead (starts a local Spark)")
    maintain.add_argument("--keep-snapshots", type=int, default=10, help="Parquet silver snapshots to keep")
    maintain.add_argument("--endpoint-url", default=None, help="S3 endpoint, e.g. a moto server")
    maintain.add_argument("--region", default=C.REGION)
    setup = sub.add_parser("local-setup", help="on a moto server: the contract's DynamoDB table with its stream, the "
                                              "Kinesis stream and a lake bucket (what exists is kept)")
    LJ.add_contract_arg(setup)
    setup.add_argument("--table", default=None, help="the DynamoDB table (default: the contract's)")
    setup.add_argument("--kinesis-stream", default=KINESIS_STREAM)
    setup.add_argument("--shards", type=int, default=2, help="Kinesis shards")
    setup.add_argument("--bucket", default="sales-lake", help="S3 bucket for --lake-root s3://<bucket>/lake")
    setup.add_argument("--endpoint-url", required=True,
                       help="the moto server (python -m sales_cdc_local.moto_server -p 5000: http://127.0.0.1:5000); "
                            "on AWS, `deploy` creates these")
    setup.add_argument("--region", default=C.REGION)
    pipe = sub.add_parser("pipe", help="local EventBridge Pipe: DynamoDB stream -> Kinesis, resumable")
    LJ.add_contract_arg(pipe)
    pipe.add_argument("--table", default=None, help="the DynamoDB table (default: the contract's)")
    pipe.add_argument("--kinesis-stream", default=KINESIS_STREAM)
    pipe.add_argument("--state-file", type=Path, default=Path(".demo/pipe-state.json"))
    pipe.add_argument("--idle-seconds", type=float, default=10.0, help="stop after this long without new records")
    pipe.add_argument("--endpoint-url", default=None)
    pipe.add_argument("--region", default=C.REGION)


def _add_aws(sub) -> None:
    deploy = sub.add_parser("deploy", help="build the wheel, deploy the CloudFormation stack, upload job artifacts")
    deploy.add_argument("--stack", default="sales-cdc")
    deploy.add_argument("--subnets", required=True, help="comma-separated private subnet ids for Redshift Serverless")
    deploy.add_argument("--security-groups", required=True, help="comma-separated security group ids")
    deploy.add_argument("--alert-email", default="", help="e-mail subscribed to the alert topic")
    deploy.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="any other stack parameter (repeatable), e.g. KinesisStreamMode=PROVISIONED")
    deploy.add_argument("--start", action="store_true", help="start a job run after deploying")
    LJ.add_contract_arg(deploy)
    deploy.add_argument("--region", default=None)
    teardown = sub.add_parser("teardown", help="empty the artifacts/docs buckets and delete the stack "
                                               "(table, lake bucket and Redshift namespace are retained)")
    teardown.add_argument("--stack", default="sales-cdc")
    teardown.add_argument("--region", default=None)
