"""The baseline: plain DRF views on a plain ORM model, no events."""

from django.db import transaction
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.serializers import AccountOutputSerializer, amount_field

from .models import PlainAccount


class PlainOutputSerializer(AccountOutputSerializer):
    owner = serializers.CharField(source="owner.username")


class PlainAccountApi(APIView):
    def get(self, request, account_id):
        account = PlainAccount.objects.select_related("owner").get(pk=account_id)
        return Response(PlainOutputSerializer(account).data)


class PlainDepositApi(APIView):
    class InputSerializer(serializers.Serializer):
        amount = amount_field()

    def post(self, request, account_id):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            account = (
                PlainAccount.objects.select_for_update()
                .select_related("owner")
                .get(pk=account_id)
            )
            account.balance += serializer.validated_data["amount"]
            account.version += 1
            account.save(update_fields=["balance", "version"])
        return Response(PlainOutputSerializer(account).data)
