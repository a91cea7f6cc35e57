"""What a pipeline costs and did: the cost estimate (dated list prices) and the run report."""
