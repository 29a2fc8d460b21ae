"""Packaging and deploy on a moto server: the wheel builds, the stack (moto-supported part) deploys and
updates, the job's artifacts land where the job parameters point, and teardown empties and deletes."""

from __future__ import annotations

import json
import uuid
import zipfile

import pytest
import yaml

from sales_cdc_local import deploy as D
from tests.helpers import MOTO_TYPES, TEMPLATE, without_removed

pytestmark = pytest.mark.slow


def moto_template(tmp_path):
    template = yaml.safe_load(TEMPLATE.read_text())
    removed = {n for n, r in template["Resources"].items() if r["Type"] not in MOTO_TYPES}
    suffix = uuid.uuid4().hex[:6]
    resources = {n: without_removed(r, removed) for n, r in template["Resources"].items() if n not in removed}
    resources["OrdersRawTable"]["Properties"]["TableName"] = f"OrdersRawTable-{suffix}"
    resources["SalesStream"]["Properties"]["Name"] = f"kinesis-for-sales-data-{suffix}"
    outputs = {k: v for k, v in template["Outputs"].items() if k in ("ArtifactsBucket", "LakeRoot", "DocsLocation")}
    body = {"AWSTemplateFormatVersion": "2010-09-09", "Conditions": template["Conditions"],
            "Parameters": {k: v for k, v in template["Parameters"].items() if not k.startswith("Redshift")},
            "Resources": resources, "Outputs": outputs}
    path = tmp_path / "template.json"
    path.write_text(json.dumps(body))
    return path, suffix


def test_wheel_deploy_update_and_teardown(moto, tmp_path):
    wheel = D.build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sales_cdc/glue.py" in names and "sales_cdc/quality/check.py" in names
    assert "sales_cdc/contracts/orders.yaml" in names  # the default contract travels with the job
    assert not any(n.startswith(("tests/", "jobs/")) for n in names)

    template, suffix = moto_template(tmp_path)
    cfn, s3 = moto.client("cloudformation"), moto.client("s3")
    stack = f"deploy-{suffix}"
    outputs = D.deploy(cfn, s3, stack, {}, wheel, template=template)
    bucket = outputs["ArtifactsBucket"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"sales-cdc/scripts/glue_job.py", "sales-cdc/scripts/glue_backfill.py", f"sales-cdc/wheels/{wheel.name}",
            "sales-cdc/expectations/expectations/orders.json",
            "sales-cdc/expectations/expectations/cdc_envelope.json", "sales-cdc/contracts/contract.yaml"} <= keys

    assert D.deploy(cfn, s3, stack, {}, wheel, template=template) == outputs  # re-deploy: an update, same outputs

    assert bucket in D.teardown(cfn, s3, stack)
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
