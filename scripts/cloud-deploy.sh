#!/usr/bin/env bash
# Deploys the cloud side (cloud/template.yaml) with one command; docs/cloud.md walks through it.
#   scripts/cloud-deploy.sh STACK CODE_BUCKET ALARM_EMAIL INFLUX_URL [Key=Value ...]
# Extra Key=Value pairs are CloudFormation parameters (InfluxTokenSecretArn=..., ClaimCertificateIds=...,
# LambdaSubnetIds=..., OpsEmail=...). Needs the AWS CLI v2 with credentials for the target account.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,6p' "$0" >&2
  exit 2
fi
stack=$1 bucket=$2 email=$3 influx=$4
shift 4
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
python3 -m cloud.template_sync --check
read -r zip digest < <(python3 -m cloud.package)
key="methane-agent/cloud-lambda-${digest:0:16}.zip"
aws s3 cp --only-show-errors "$zip" "s3://$bucket/$key"
aws cloudformation deploy \
  --stack-name "$stack" \
  --template-file cloud/template.yaml \
  --capabilities CAPABILITY_IAM \
  --no-fail-on-empty-changeset \
  --parameter-overrides CodeBucket="$bucket" CodeKey="$key" AlarmEmail="$email" InfluxUrl="$influx" "$@"
aws cloudformation describe-stacks --stack-name "$stack" --query 'Stacks[0].Outputs' --output table
