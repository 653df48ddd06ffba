"""The back office's view of accounts: read models, read-only.

Changes go through the services (later: admin actions that call them), never
through these forms.
"""

from django.contrib import admin

from .models import AccountBalance, LedgerEntry


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AccountBalance)
class AccountBalanceAdmin(ReadOnlyAdmin):
    list_display = ["number", "owner", "currency", "balance", "status", "updated_at"]
    list_filter = ["status", "currency"]
    search_fields = ["number", "owner__username", "=id"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["account", "position", "type", "amount", "balance_after"]
    list_filter = ["type"]
    search_fields = ["=account__id", "account__number", "=transfer_id"]
