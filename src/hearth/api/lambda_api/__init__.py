"""The subset of the AWS Lambda REST API that boto3 and the AWS CLI need, served over Hearth functions."""
