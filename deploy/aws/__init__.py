"""Deployment to AWS: the CloudFormation template, the Lambda package, the stack's change sets."""
