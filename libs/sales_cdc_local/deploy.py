"""Package and deploy to AWS: build the wheel, create/update the CloudFormation stack, upload the Glue
entry script, the wheel and the expectation suites; and tear it all down again.

Uses boto3 (the calls ``aws cloudformation deploy`` / ``aws s3 cp`` make), so it runs wherever the
package does and is tested against a moto server.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from sales_cdc import config as C
from sales_cdc.contract import DEFAULT_CONTRACT, Contract, load_contract
from sales_cdc.errors import JobError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "cloudformation" / "sales-cdc.yaml"
ENTRY_SCRIPT = REPO / "jobs" / "glue_job.py"
BACKFILL_SCRIPT = REPO / "jobs" / "glue_backfill.py"
EXPECTATIONS = C.DEFAULT_EXPECTATIONS


@dataclass(frozen=True)
class Artifacts:
    bucket: str
    prefix: str = "sales-cdc"

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts])


def build_wheel(dist: Path = REPO / "dist") -> Path:
    """``pip wheel`` of this project (no dependencies: Glue installs them from PyPI at start-up)."""
    dist.mkdir(parents=True, exist_ok=True)
    before = set(dist.glob("sales_cdc-*.whl"))
    # setuptools packs whatever its build folder holds: a full wheel built before (the harness's) would leak into it
    shutil.rmtree(REPO / "build", ignore_errors=True)
    # the job package alone, with the job's requirements (setup.py): Glue never installs the harness
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)], check=True,
                   env={**os.environ, "SALES_CDC_WHEEL": "job"})
    wheels = sorted(dist.glob("sales_cdc-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"no wheel was built in {dist}")
    log.info("wheel %s (%s)", wheels[-1].name, "new" if wheels[-1] not in before else "rebuilt")
    return wheels[-1]


def upload_artifacts(s3, artifacts: Artifacts, wheel: Path, contract: Path = DEFAULT_CONTRACT) -> list[str]:
    """Entry script, wheel, the table contract and the suites where the stack's job parameters point."""
    load_contract(contract)  # a contract the job would refuse is refused here, before anything is uploaded
    uploads = [*[(script, artifacts.key("scripts", script.name)) for script in (ENTRY_SCRIPT, BACKFILL_SCRIPT)],
               (wheel, artifacts.key("wheels", wheel.name)),
               (contract, artifacts.key("contracts", "contract.yaml"))]
    uploads += [(suite, artifacts.key("expectations", "expectations", suite.name))
                for suite in sorted((EXPECTATIONS / "expectations").glob("*.json"))]
    for path, key in uploads:
        s3.upload_file(str(path), artifacts.bucket, key, ExtraArgs={"ServerSideEncryption": "aws:kms"})
    return [key for _, key in uploads]


def _stack_exists(cfn, stack: str) -> bool:
    try:
        status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    except ClientError as error:
        if "does not exist" in str(error):
            return False
        raise
    return status != "REVIEW_IN_PROGRESS"


def deploy_stack(cfn, stack: str, template_body: str, parameters: dict[str, str]) -> dict[str, str]:
    """Create or update ``stack`` and wait; returns its outputs."""
    request = {"StackName": stack, "TemplateBody": template_body, "Capabilities": ["CAPABILITY_IAM"],
               "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]}
    if _stack_exists(cfn, stack):
        try:
            cfn.update_stack(**request)
            cfn.get_waiter("stack_update_complete").wait(StackName=stack)
        except ClientError as error:
            if "No updates are to be performed" not in str(error):
                raise
            log.info("stack %s is up to date", stack)
    else:
        cfn.create_stack(**request, OnFailure="ROLLBACK")
        cfn.get_waiter("stack_create_complete").wait(StackName=stack)
    return stack_outputs(cfn, stack)


def stack_outputs(cfn, stack: str) -> dict[str, str]:
    description = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}


def start_backfill(cfn, glue, stack: str, arguments: dict[str, str]) -> tuple[str, str]:
    """Start the stack's backfill job (``glue_backfill.BACKFILL_PARAMS``: ``arguments`` override the job's
    defaults); (job name, run id)."""
    job = stack_outputs(cfn, stack).get("BackfillJobName")
    if job is None:
        raise JobError(f"stack {stack} has no backfill job (no BackfillJobName output): deploy this release "
                       "(`sales-cdc deploy`) to add it")
    run = glue.start_job_run(JobName=job, Arguments={f"--{k}": v for k, v in arguments.items()})
    return job, run["JobRunId"]


def contract_parameters(contract: Contract) -> dict[str, str]:
    """The stack parameters a contract decides: the table, its partition key and its sort key (if any)."""
    parameters = {"TableName": contract.table}
    for role, key in zip(("Key", "SortKey"), contract.entity.key_fields, strict=False):
        parameters[f"{role}AttributeName"], parameters[f"{role}AttributeType"] = key.name, key.ddb_type
    return parameters


def deploy(cfn, s3, stack: str, parameters: dict[str, str], wheel: Path, template: Path = TEMPLATE,
           prefix: str = "sales-cdc", contract: Path = DEFAULT_CONTRACT) -> dict[str, str]:
    loaded = load_contract(contract)  # before the stack: a bad contract stops the deploy with its one line
    outputs = deploy_stack(cfn, stack, template.read_text(), {"ArtifactsKeyPrefix": prefix, "WheelFileName": wheel.name,
                                                              **contract_parameters(loaded), **parameters})
    upload_artifacts(s3, Artifacts(outputs["ArtifactsBucket"], prefix), wheel, contract)
    return outputs


def create_job_user(data_api, serverless, outputs: dict[str, str], db_schema: str = "sales") -> str:
    """Create the Glue job's own Redshift user, ``IAMR:<job role>``, with rights on its schema only. The job
    reaches Redshift with its role's temporary credentials (no secret); this runs once per deploy, as the
    admin, whose password Redshift keeps (and rotates) in Secrets Manager. Returns the user's name."""
    from sales_cdc.sql import iam_role_user, job_user_grants
    from sales_cdc.warehouse.redshift import DataApi, DataApiConnection

    namespace = serverless.get_namespace(namespaceName=outputs["RedshiftNamespace"])["namespace"]
    connection = DataApiConnection(outputs["RedshiftDatabase"], workgroup_name=outputs["RedshiftWorkgroup"],
                                   secret_arn=namespace["adminPasswordSecretArn"])
    admin = DataApi(data_api, connection, statement_name="deploy")
    role = outputs["GlueJobRoleName"]
    user = iam_role_user(role)
    if not admin.query("SELECT 1 FROM pg_user WHERE usename = :name", {"name": f"IAMR:{role}"}):
        admin.query(f"CREATE USER {user} PASSWORD DISABLE")
    for statement in job_user_grants(db_schema, outputs["RedshiftDatabase"], user):
        admin.query(statement)
    return user


def empty_bucket(s3, bucket: str) -> int:
    """Delete every object version and delete marker (a versioned bucket must be empty to be deleted)."""
    removed = 0
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for start in range(0, len(doomed), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start:start + 1000], "Quiet": True})
        removed += len(doomed)
    return removed


def teardown(cfn, s3, stack: str) -> list[str]:
    """Empty the artifacts and docs buckets, delete the stack. The lake bucket, the DynamoDB table and
    the Redshift namespace are retained (DeletionPolicy: Retain): data is never deleted by a teardown."""
    outputs = stack_outputs(cfn, stack)
    emptied = []
    for key in ("ArtifactsBucket", "DocsLocation"):
        if key in outputs:
            bucket = outputs[key].removeprefix("s3://").split("/", 1)[0]
            empty_bucket(s3, bucket)
            emptied.append(bucket)
    cfn.delete_stack(StackName=stack)
    cfn.get_waiter("stack_delete_complete").wait(StackName=stack)
    return emptied
