"""通话 calls: click-to-call (tel:) numbers of people and units, and the call log the operator fills."""
