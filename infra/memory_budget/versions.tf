terraform {
  # Validation across variables and output preconditions need 1.9; no provider at all, so this
  # module plans offline (tests/iac/test_iac_memory_budget.py runs it).
  required_version = ">= 1.9"
}
