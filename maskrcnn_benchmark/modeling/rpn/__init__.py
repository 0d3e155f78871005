"""Region Proposal Network (RPN)."""
