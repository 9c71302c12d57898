"""Tasks: the MiniArith generator and GSM8K-format loading and answer checking."""
