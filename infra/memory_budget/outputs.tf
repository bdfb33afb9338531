output "memory_mib" {
  description = "The instance memory in MiB (the function's MEMORY_MIB); planning fails if the budget does not fit it."
  value       = local.memory_mib

  precondition {
    condition     = local.required_mib <= local.memory_mib
    error_message = "Function memory ${var.memory} (${local.memory_mib} MiB) is too small for concurrency ${var.concurrency} x ${local.request_mib} MiB per request (max_image_pixels ${var.max_image_pixels}, max_image_bytes ${var.max_image_bytes}) + ${local.budget.baseline_mib} MiB baseline = ${local.required_mib} MiB: raise function_memory, or lower function_concurrency or max_image_pixels (docs/performance.md, \"Memory budget\")."
  }
}

output "required_mib" {
  description = "Baseline plus concurrency worst-case requests, in MiB."
  value       = local.required_mib
}

output "request_mib" {
  description = "The most one request can hold, in MiB."
  value       = local.request_mib
}
