"""The IR and what it is made of: errors, nonlinearities, instruction records, the interpreter base."""
