# The function's memory budget, checked at plan time with the rule the function applies at cold
# start (functions/segmentation/memory.py): baseline + concurrency x worst-case request must fit
# the instance's memory. Both read the same memory_budget.json.

locals {
  budget = jsondecode(file(var.budget_file))
  mib    = 1024 * 1024

  memory_parts = regex("^([0-9]+)(Mi|Gi|M|G)$", var.memory)
  memory_mib = floor(tonumber(local.memory_parts[0]) * lookup({
    Mi = 1
    Gi = 1024
    M  = 1000000 / local.mib
    G  = 1000000000 / local.mib
  }, local.memory_parts[1]))

  request_mib = ceil(
    (local.budget.bytes_per_pixel * var.max_image_pixels + local.budget.upload_copies * var.max_image_bytes) / local.mib
  ) + local.budget.request_overhead_mib
  required_mib = local.budget.baseline_mib + var.concurrency * local.request_mib
}
