"""The DSL that records programs: Program, handles and reverse-mode differentiation."""
