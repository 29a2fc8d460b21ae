"""The CloudFormation stack: consistent with the job's parameters, least privilege, encrypted, and the
parts moto's CloudFormation models deployed into a moto server and checked."""

from __future__ import annotations

import ast
import json
import re
import uuid

import pytest
import yaml

from sales_cdc import glue
from sales_cdc import metrics as M
from tests.helpers import MOTO_TYPES, TEMPLATE, without_removed


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def resources(template: dict, kind: str) -> dict:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def statements(template: dict):
    for name, role in resources(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield name, statement


def test_no_wildcard_actions_and_wildcard_resources_only_where_nothing_can_be_named(template):
    unnamed_ok = {"cloudwatch:PutMetricData", "redshift-data:DescribeStatement", "redshift-data:GetStatementResult",
                  "redshift-data:CancelStatement"}
    for role, statement in statements(template):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in a for a in actions), (role, actions)
        if statement["Resource"] == "*":
            assert set(actions) <= unnamed_ok, (role, actions)


def test_every_store_and_stream_is_encrypted_and_buckets_are_private(template):
    for name, bucket in resources(template, "AWS::S3::Bucket").items():
        props = bucket["Properties"]
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], name
        assert all(props["PublicAccessBlockConfiguration"].values()), name
        assert props["VersioningConfiguration"]["Status"] == "Enabled", name
        assert props["LifecycleConfiguration"]["Rules"], name
    table = template["Resources"]["OrdersRawTable"]["Properties"]
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert table["SSESpecification"]["SSEType"] == "KMS"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert template["Resources"]["SalesStream"]["Properties"]["StreamEncryption"]["EncryptionType"] == "KMS"
    for kind in ("AWS::SQS::Queue", "AWS::SNS::Topic"):
        assert all("KmsMasterKeyId" in r["Properties"] for r in resources(template, kind).values())
    workgroup = template["Resources"]["RedshiftWorkgroup"]["Properties"]
    assert workgroup["PubliclyAccessible"] is False


def test_pipe_keys_kinesis_records_by_order_and_has_a_dead_letter_queue(template):
    pipe = template["Resources"]["OrdersPipe"]["Properties"]
    assert pipe["TargetParameters"]["KinesisStreamParameters"]["PartitionKey"] == {
        "Fn::Sub": "$.dynamodb.Keys.${KeyAttributeName}.${KeyAttributeType}"}  # the key, not a hard-coded name
    assert "orderid" not in json.dumps(template)  # the key names are parameters, set by deploy from the contract
    assert "Default" not in template["Parameters"]["KeyAttributeName"]
    source = pipe["SourceParameters"]["DynamoDBStreamParameters"]
    assert source["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["PipeDeadLetterQueue", "Arn"]}


def test_glue_job_arguments_are_the_entry_scripts_parameters(template):
    job = template["Resources"]["StreamingJob"]["Properties"]
    assert job["GlueVersion"] == "6.0" and job["Command"]["Name"] == "gluestreaming"
    arguments = job["DefaultArguments"]
    assert arguments["--datalake-formats"] == "delta"
    assert "wheels" in json.dumps(arguments["--additional-python-modules"])
    known = {p.name for p in glue.GLUE_PARAMS}
    ours = {a[2:] for a in arguments if re.fullmatch(r"--[a-z_]+", a)}
    assert ours <= known, f"unknown job parameters in the template: {ours - known}"
    assert {p.name for p in glue.GLUE_PARAMS if p.default is None} <= ours




def test_the_template_s_job_defaults_are_the_job_s(template):
    """A job argument the template takes from a stack parameter defaults to what the job defaults to."""
    arguments = template["Resources"]["StreamingJob"]["Properties"]["DefaultArguments"]
    checked = []
    for name, value in arguments.items():
        parameter = template["Parameters"].get(value.get("Ref")) if isinstance(value, dict) else None
        if parameter is not None and "Default" in parameter and name[2:] in glue.DEFAULTS:
            assert str(parameter["Default"]) == glue.DEFAULTS[name[2:]], name
            checked.append(name)
    assert {"--window_size", "--starting_position", "--raw_format", "--dq_params"} <= set(checked)


def deploy_on_moto(template, moto, **parameters) -> tuple[dict[str, str], dict]:
    """The moto-modelled part of the template as a stack (names unique on the shared moto server):
    (logical -> physical ids, the resources sent)."""
    removed = {n for n, r in template["Resources"].items() if r["Type"] not in MOTO_TYPES}
    kept = {n: without_removed(r, removed) for n, r in template["Resources"].items() if n not in removed}
    suffix = uuid.uuid4().hex[:6]
    values = {"TableName": f"OrdersRawTable-{suffix}", "StreamName": f"kinesis-for-sales-data-{suffix}", **parameters}
    body = {"AWSTemplateFormatVersion": "2010-09-09", "Conditions": template["Conditions"], "Resources": kept,
            "Parameters": {k: v for k, v in template["Parameters"].items() if not k.startswith("Redshift")}}
    cfn = moto.client("cloudformation")
    stack = f"sales-cdc-{suffix}"
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps(body), Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()])
    assert cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]
                if "LogicalResourceId" in r}  # moto lists a resource its condition left out without a name
    return physical, kept


@pytest.mark.slow
def test_the_stack_deploys_on_moto_cloudformation(template, moto):
    """A table with a partition and a sort key (the contract's key.partition and key.sort)."""
    physical, kept = deploy_on_moto(template, moto, KeyAttributeName="pk", SortKeyAttributeName="sk",
                                    SortKeyAttributeType="N", DocsCdn="cloudfront")
    assert set(physical) == set(kept)

    table = moto.client("dynamodb").describe_table(TableName=physical["OrdersRawTable"])["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}]  # (moto drops SSE settings)
    assert {"AttributeName": "sk", "AttributeType": "N"} in table["AttributeDefinitions"]
    stream = moto.client("kinesis").describe_stream_summary(StreamName=physical["SalesStream"])
    assert stream["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"  # (moto drops StreamEncryption)
    s3 = moto.client("s3")  # (moto's CloudFormation applies encryption only; public access
    # block, versioning and lifecycle are checked statically above and by checkov)
    for bucket in ("LakeBucket", "ArtifactsBucket", "DocsBucket"):
        rules = s3.get_bucket_encryption(Bucket=physical[bucket])["ServerSideEncryptionConfiguration"]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    queue_url = physical["PipeDeadLetterQueue"]
    attributes = moto.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["KmsMasterKeyId"] and attributes["MessageRetentionPeriod"] == "1209600"
    topic = moto.client("sns").get_topic_attributes(TopicArn=physical["AlertTopic"])["Attributes"]
    assert topic["KmsMasterKeyId"]
    role = moto.client("iam").get_role(RoleName=physical["GlueJobRole"])["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "glue.amazonaws.com"}


@pytest.mark.slow
def test_the_stack_attaches_to_an_existing_table_s_stream_on_moto(template, moto):
    """ExistingTableStreamArn set: no table is created; the Pipe's role reads that stream only."""
    dynamodb = moto.client("dynamodb")
    name = f"Customers-{uuid.uuid4().hex[:6]}"
    described = dynamodb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})["TableDescription"]
    stream_arn = described["LatestStreamArn"]
    physical, kept = deploy_on_moto(template, moto, TableName=name, KeyAttributeName="pk",
                                    ExistingTableStreamArn=stream_arn)
    assert "OrdersRawTable" not in physical and set(physical) == set(kept) - {"OrdersRawTable"}
    iam = moto.client("iam")
    policy = iam.get_role_policy(RoleName=physical["PipeRole"], PolicyName="stream-to-kinesis")["PolicyDocument"]
    policy = ast.literal_eval(policy) if isinstance(policy, str) else policy  # moto's CloudFormation: a repr
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["ReadTheTableStream"]["Resource"] == stream_arn
    assert statements["ListStreams"]["Resource"].endswith(f":table/{name}/stream/*")


def test_the_backfill_job_s_arguments_are_its_entry_script_s_parameters(template):
    from sales_cdc.glue_backfill import BACKFILL_PARAMS

    job = template["Resources"]["BackfillJob"]["Properties"]
    assert job["GlueVersion"] == "6.0" and job["Command"]["Name"] == "glueetl"
    assert "glue_backfill.py" in json.dumps(job["Command"]["ScriptLocation"])
    ours = {a[2:] for a in job["DefaultArguments"] if re.fullmatch(r"--[a-z_]+", a)}
    assert ours <= {p.name for p in BACKFILL_PARAMS}
    assert {p.name for p in BACKFILL_PARAMS if p.default is None} <= ours
    assert template["Outputs"]["BackfillJobName"] == {"Value": {"Ref": "BackfillJob"}}


def _alarm_metrics(alarm: dict) -> list[tuple[str, str]]:
    """(namespace, metric name) of every metric an alarm reads, alone or in metric math."""
    props = alarm["Properties"]
    if "MetricName" in props:
        return [(props["Namespace"], props["MetricName"])]
    return [(q["MetricStat"]["Metric"]["Namespace"], q["MetricStat"]["Metric"]["MetricName"])
            for q in props["Metrics"] if "MetricStat" in q]


OURS = {"Ref": "MetricsNamespace"}  # the job's namespace, a stack parameter passed to the job


def test_the_alarms_watch_what_the_job_publishes_and_tell_the_alert_topic(template):
    assert template["Parameters"]["MetricsNamespace"]["Default"] == M.NAMESPACE == glue.DEFAULTS["metrics_namespace"]
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    ours = {metric for alarm in alarms.values() for ns, metric in _alarm_metrics(alarm) if ns == OURS}
    assert ours <= {m.name for m in M.BATCH_METRICS} | {M.HALTS, M.STAGE_SECONDS}
    # batch duration, quarantine share, halts, no batch while records arrive, lag
    assert {"BatchSeconds", "EventsQuarantined", "EventsRead", M.HALTS, "BatchesCommitted", "EventLagSeconds"} <= ours
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlertTopic"}], alarm["Properties"]["AlarmDescription"]
        if any(ns == OURS for ns, _ in _alarm_metrics(alarm)):  # a quiet table alarms on nothing
            assert alarm["Properties"]["TreatMissingData"] == "notBreaching"


def test_the_job_publishes_metrics_to_its_namespace_only(template):
    (allowed,) = [s for _, s in statements(template) if s["Action"] == "cloudwatch:PutMetricData"]
    assert OURS in allowed["Condition"]["StringEquals"]["cloudwatch:namespace"]
    job_arguments = template["Resources"]["StreamingJob"]["Properties"]["DefaultArguments"]
    assert job_arguments["--metrics_namespace"] == OURS


def test_the_dashboard_draws_every_metric_the_job_publishes(template):
    (dashboard,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"].replace("${MetricsNamespace}", "ours")
    body = json.loads(re.sub(r"\$\{[^}]+\}", "0", text))
    drawn = {tuple(m[:2]) for widget in body["widgets"] for m in widget["properties"]["metrics"]}
    assert {("ours", name) for name in [*(m.name for m in M.BATCH_METRICS), M.HALTS, M.STAGE_SECONDS]} <= drawn


def test_the_docs_site_can_sit_behind_cloudfront_reading_the_private_bucket_through_origin_access_control(template):
    resources_ = template["Resources"]
    distribution = resources_["DocsDistribution"]
    assert distribution["Condition"] == "HasDocsCdn" and resources_["DocsOriginAccessControl"]["Condition"] == "HasDocsCdn"
    config = distribution["Properties"]["DistributionConfig"]
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": ["DocsBucket", "RegionalDomainName"]}
    assert origin["OriginPath"] == "/data-docs" and origin["OriginAccessControlId"] == {
        "Fn::GetAtt": ["DocsOriginAccessControl", "Id"]}
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    assert config["DefaultCacheBehavior"]["AllowedMethods"] == ["GET", "HEAD"]
    assert config["WebACLId"] == {"Fn::If": ["HasDocsWebAcl", {"Ref": "DocsWebAclArn"}, {"Ref": "AWS::NoValue"}]}
    # the bucket stays private: only this distribution reads, and only the site's prefix
    policy = resources_["DocsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (reads,) = [s["Fn::If"][1] for s in policy if "Fn::If" in s]
    assert reads["Principal"] == {"Service": "cloudfront.amazonaws.com"} and reads["Action"] == "s3:GetObject"
    assert "distribution/${DocsDistribution}" in reads["Condition"]["StringEquals"]["AWS:SourceArn"]["Fn::Sub"]
    assert reads["Resource"]["Fn::Sub"].endswith("/data-docs/*")
    assert template["Outputs"]["DocsUrl"]["Condition"] == "HasDocsCdn"


@pytest.mark.slow
def test_dq_docs_prints_a_stack_s_docs_url(moto, capsys):
    """`sales-cdc dq-docs --stack` reads the stack's outputs (a stack on moto with the outputs the template gives)."""
    from sales_cdc_local.cli import main

    cfn, name = moto.client("cloudformation"), f"docs-{uuid.uuid4().hex[:6]}"
    outputs = {"DocsUrl": {"Value": "https://d111111abcdef8.cloudfront.net/index.html"},
               "DocsLocation": {"Value": "s3://docs-bucket/data-docs"}}
    for stack, kept in ((name, outputs), (f"{name}-private", {"DocsLocation": outputs["DocsLocation"]})):
        body = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}, "Outputs": kept}
        cfn.create_stack(StackName=stack, TemplateBody=json.dumps(body))
    capsys.readouterr()
    assert main(["dq-docs", "--stack", name, "--endpoint-url", moto.endpoint]) == 0
    assert capsys.readouterr().out.strip() == "https://d111111abcdef8.cloudfront.net/index.html"
    assert main(["dq-docs", "--stack", f"{name}-private", "--endpoint-url", moto.endpoint]) == 0
    assert "DocsCdn=cloudfront" in capsys.readouterr().out
