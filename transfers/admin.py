"""The back office's view of transfers: read-only, like every read model."""

from django.contrib import admin

from .models import Totals, TransferSummary


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TransferSummary)
class TransferSummaryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "from_account",
        "to_account",
        "amount",
        "currency",
        "status",
        "failure_reason",
        "created_at",
    ]
    list_filter = ["status", "currency", "failure_reason"]
    search_fields = ["=id", "=from_account", "=to_account", "reference"]
    date_hierarchy = "created_at"


@admin.register(Totals)
class TotalsAdmin(ReadOnlyAdmin):
    list_display = [
        "currency",
        "partition",
        "balances",
        "in_transit",
        "deposited",
        "withdrawn",
    ]
    list_filter = ["currency"]
